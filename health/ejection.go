package health

import (
	"time"

	"github.com/reroute-go/reroute/policy"
)

// ejection is the passive health of one identifier: its failures in a row,
// and whether it is ejected. Its states, and what moves between them:
//
//	healthy ──(rule.Consecutive failures in a row)──▶ ejected until `until`
//	ejected ──(time reaches until)──────────────────▶ half-open
//	half-open ──(a success)──────────────────────────▶ healthy (recovered)
//	half-open ──(a failure)──────────────────────────▶ ejected again, for twice as long
//
// A failure or a success while ejected changes nothing: it belongs to an
// attempt that started before the ejection (measured: in an outage that
// begins under load, the successes of attempts begun just before it kept
// undoing the ejection, and the dead target got a hundred more attempts). Half-open is not stored: it is "ejections >
// 0 and until ≤ now", so the passage of time needs no transition and no
// publication. Who may probe a half-open identifier is decided outside
// the State, lock-free (see Probes); claim is the State's own record of it
// for single-goroutine use (the simulator).
//
// Reports from concurrent requests reach the State out of order (they sit
// in different stripes), so each carries its time: a failure older than
// the latest success applied is stale and does not count, and a success
// older than the latest failure leaves a streak of one behind.
type ejection struct {
	rule      *policy.EjectionRule // nil: passive health is off for this identifier
	streak    int32                // failures in a row since the last success
	ejections int32                // consecutive ejections; 0 = healthy
	until     int64                // end of the current ejection (unix ns)
	claim     int64                // the probe's claim runs until then (single-goroutine use)
	lastFail  int64                // time of the latest failure counted
	lastOK    int64                // time of the latest success applied
	recovered int64                // time of the latest recovery, own or imported; 0 none
}

// ejectionRules gives each identifier its rule: a target its own when its
// scope is the model, a provider the rule of its first target whose scope
// is the provider.
func ejectionRules(c *policy.Compiled) []ejection {
	out := make([]ejection, c.NumIDs())
	if len(c.Ejection) == 0 {
		return out
	}
	for t, r := range c.Ejection {
		if r == nil {
			continue
		}
		id := c.ID(t, r.Scope)
		if out[id].rule == nil {
			out[id].rule = r
		}
	}
	return out
}

// EjectionID returns the identifier whose passive health target t's
// outcomes count for (the target, or its provider), and whether passive
// health is on for it.
func (s *State) EjectionID(t int) (id int, ok bool) {
	if uint(t) >= uint(s.nt) {
		return 0, false
	}
	if s.ej[t].rule != nil {
		return t, true
	}
	if p := s.provider[t]; s.ej[p].rule != nil {
		return p, true
	}
	return 0, false
}

// Failure records a failure that counts for passive health (a 5xx, a
// timeout or transport error, a 429 without a usable hint) of identifier id
// at now. It reports whether the failure ejected id (a streak reaching the
// rule's threshold, or the failure of a half-open identifier's probe), and
// until when. An identifier without a rule, or out of range, is ignored.
func (s *State) Failure(id int, now int64) (ejected bool, until int64) {
	if !s.valid(id) {
		return false, 0
	}
	e := &s.ej[id]
	if e.rule == nil {
		return false, 0
	}
	if e.ejections > 0 {
		if now < e.until {
			return false, e.until // an attempt that began before the ejection
		}
		e.ejections++
		e.until, e.claim = addSat(now, cooldown(e.rule, e.ejections, id, now)), 0
		return true, e.until
	}
	if now < e.lastOK {
		return false, 0 // older than a success already applied
	}
	e.lastFail = max(e.lastFail, now)
	e.streak++
	if int(e.streak) < e.rule.Consecutive {
		return false, 0
	}
	e.streak, e.ejections = 0, 1
	e.until, e.claim = addSat(now, cooldown(e.rule, 1, id, now)), 0
	return true, e.until
}

// Success records an answer of identifier id at now that shows it works
// (anything but a counted failure). It resets id's streak, and reports
// whether id was half-open and so has recovered. A success while id is
// ejected (now before the ejection's end) is ignored, like a failure.
func (s *State) Success(id int, now int64) (recovered bool) {
	if !s.valid(id) {
		return false
	}
	e := &s.ej[id]
	e.lastOK = max(e.lastOK, now)
	switch {
	case now >= e.lastFail:
		e.streak = 0
	case e.streak > 0:
		e.streak = 1 // a failure came after this success
	}
	if e.ejections == 0 || now < e.until {
		return false
	}
	e.ejections, e.until, e.claim = 0, 0, 0
	e.recovered = max(e.recovered, now)
	return true
}

// Ejections returns id's consecutive ejections (0: healthy) and the end of
// the current one.
func (s *State) Ejections(id int) (n int, until int64) {
	if uint(id) >= uint(len(s.ej)) {
		return 0, 0
	}
	return int(s.ej[id].ejections), s.ej[id].until
}

// Claim lets one probe of a half-open identifier through, for a
// single-goroutine owner of the State (the simulator): it reports true, and
// holds the claim until the given time, when id is half-open at now and no
// claim is held. The actor's readers claim through Probes instead.
func (s *State) Claim(id int, now, until int64) bool {
	if uint(id) >= uint(len(s.ej)) {
		return false
	}
	e := &s.ej[id]
	if e.ejections == 0 || now < e.until || now < e.claim {
		return false
	}
	e.claim = until
	return true
}

// Release gives up a claim taken with Claim (the probe was abandoned).
func (s *State) Release(id int) {
	if uint(id) < uint(len(s.ej)) {
		s.ej[id].claim = 0
	}
}

// cooldown is the length of an identifier's n-th consecutive ejection: the
// rule's cooldown doubled n-1 times, capped at its max_cooldown, then
// shortened by up to 20 % so that replicas and identifiers ejected
// together do not come back in lockstep. The spread only shortens: the cap
// is what bounds how long a recovered target goes unused. The spread is a hash of the identifier, n and
// now rather than a random draw, so the State stays a pure function of its
// inputs.
func cooldown(r *policy.EjectionRule, n int32, id int, now int64) time.Duration {
	d := r.Cooldown
	for i := int32(1); i < n && d < r.MaxCooldown; i++ {
		d *= 2
	}
	d = min(d, r.MaxCooldown)
	h := uint64(id)*0x9e3779b97f4a7c15 ^ uint64(n)<<32 ^ uint64(now)
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	// d × (0.8 + 0.2 × h/2⁶⁴): in [0.8 d, d)
	f := 0.8 + 0.2*float64(h>>11)/float64(1<<53)
	return time.Duration(float64(d) * f)
}

// maxConsecutive is the most failures of id that can change anything at
// once: its rule's threshold (more in a row only repeat an ejection that
// the first threshold's worth made), at least 1.
func (s *State) maxConsecutive(id int) int {
	if uint(id) < uint(len(s.ej)) && s.ej[id].rule != nil {
		return max(s.ej[id].rule.Consecutive, 1)
	}
	return 1
}

// Suspect reports whether id has a failure streak or an ejection: a
// success of id then matters to passive health.
func (s *State) Suspect(id int) bool {
	if uint(id) >= uint(len(s.ej)) {
		return false
	}
	return s.ej[id].suspect()
}

// suspect: a failure streak or an ejection, so a success matters.
func (e *ejection) suspect() bool { return e.streak > 0 || e.ejections > 0 }
