package health

import "sync/atomic"

// Status answers "is target T blocked at time now, by what, for how long".
// It is a plain value, safe to copy and to share. The zero Status means not
// blocked.
type Status struct {
	// Until is the unix nanosecond at which the target becomes usable
	// again: the latest expiry among the live blocks covering it (its own
	// identifier's, or its provider's). 0 or ≤ now when not blocked.
	Until int64
	// Kind is the kind of the block that ends at Until. When a retry-after
	// and a latency block end at the same instant it is Latency. Meaningless
	// when not blocked.
	Kind Kind
	// Latency reports that some live latency block covers the target, even
	// one that ends before Until: docs/behaviour.md#strategies then has same_model exhaust
	// instead of waiting.
	Latency bool

	// Ejected reports that passive health has ejected the target (or its
	// provider), identifier EjectedID: it is ejected while now <
	// EjectedUntil, and half-open after that, until a probe's outcome
	// recovers it or ejects it again. An ejection is the engine's own
	// guess, unlike the blocks above: see docs/behaviour.md#passive-health.
	Ejected      bool
	EjectedID    int
	EjectedUntil int64
	// Suspect reports that passive health is counting failures of the
	// target (or its provider), or has ejected it: a success must then be
	// reported, to reset the count or to recover it.
	Suspect bool
}

// HalfOpen reports whether the target's ejection has ended at now and it
// awaits a probe.
func (s Status) HalfOpen(now int64) bool { return s.Ejected && s.EjectedUntil <= now }

// Blocked reports whether the target is blocked at now: Until > now. A
// block that ends exactly at now is over.
func (s Status) Blocked(now int64) bool { return s.Until > now }

// entry is what a Snapshot keeps per target: the four deadlines that can
// cover it (retry-after and latency, own and provider) folded into two.
type entry struct {
	until   int64 // latest of the four deadlines; 0 = nothing recorded
	lat     int64 // latest of the two latency deadlines; 0 = none recorded
	ej      int64 // end of the binding ejection, when ejID ≥ 0
	ejID    int32 // identifier ejected (the target's or its provider's); -1 none
	kind    Kind  // kind of the block ending at until
	suspect bool  // a failure streak or an ejection covers the target
}

func (e entry) status(now int64) Status {
	st := Status{Until: e.until, Kind: e.kind, Latency: e.lat > now, Suspect: e.suspect}
	if e.ejID >= 0 {
		st.Ejected, st.EjectedID, st.EjectedUntil = true, int(e.ejID), e.ej
	}
	return st
}

// Snapshot is an immutable picture of the health state, indexed by target.
// The [Actor] publishes a new one whenever a block starts, is extended or is
// dropped; readers load the current one with [Actor.Snapshot] and never
// wait for the actor. A Snapshot is safe for concurrent use and is never
// modified after publication, so a reader may keep one as long as it likes
// (it only grows stale).
//
// A nil or zero Snapshot knows no target: every Lookup answers not blocked
// and every Clear true.
type Snapshot struct {
	entries []entry // indexed by target
	// probes are the actor's probe claims, shared by all its snapshots
	// (see Claim); nil in a snapshot not published by an actor.
	probes []atomic.Int64
	// attention is the actor's word per identifier saying a success must
	// be reported (see Attention), shared likewise.
	attention []atomic.Int32
}

// Attention reports whether a success of identifier id must be reported
// to passive health now: id has a failure streak or an ejection, or
// failure reports the actor has not applied yet. It reads the actor's
// live word, not this snapshot's picture, so it is never late. One atomic
// load. A snapshot not published by an actor says false.
func (s *Snapshot) Attention(id int) bool {
	return s != nil && uint(id) < uint(len(s.attention)) && s.attention[id].Load() != 0
}

// Claim tries to make the caller the one probe of identifier id, which
// this snapshot shows half-open at now (Status.HalfOpen): it reports true
// to exactly one of any number of concurrent callers, and holds the claim
// until the given unix nanosecond, after which another may claim (a probe
// that never reports cannot keep id half-open for good). It is one load
// and one compare-and-swap; nothing waits. A snapshot not published by an
// actor claims nothing.
func (s *Snapshot) Claim(id int, now, until int64) bool {
	if s == nil || uint(id) >= uint(len(s.probes)) {
		return false
	}
	c := &s.probes[id]
	cur := c.Load()
	return cur <= now && c.CompareAndSwap(cur, until)
}

// Release gives up a claim made with Claim until the given time (the probe
// was abandoned before it could tell anything), so that the next request
// may probe at once. A claim already replaced is left alone.
func (s *Snapshot) Release(id int, until int64) {
	if s != nil && uint(id) < uint(len(s.probes)) {
		s.probes[id].CompareAndSwap(until, 0)
	}
}

// Lookup answers whether target is blocked at now (unix nanoseconds), by
// what and until when. It is an index and a compare: no locks, no
// allocation. A target out of range is not blocked.
func (s *Snapshot) Lookup(target int, now int64) Status {
	if s == nil || uint(target) >= uint(len(s.entries)) {
		return Status{}
	}
	return s.entries[target].status(now)
}

// Clear reports whether no block at all, live or already ended, is recorded
// for target or its provider. When it is true the target is certainly not
// blocked whatever the time, so the engine calls Clear first and reads the
// clock only when it is false. Ended blocks keep Clear false until the
// actor drops them (every expiry interval, or at Sync) and publishes a
// cleaned snapshot. A target out of range is clear.
func (s *Snapshot) Clear(target int) bool {
	if s == nil || uint(target) >= uint(len(s.entries)) {
		return true
	}
	e := &s.entries[target]
	return e.until == 0 && !e.suspect
}

// Len returns the number of targets the snapshot covers: NumTargets of the
// configuration, or 0 for a nil or zero Snapshot.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}

// newSnapshot returns a Snapshot with n zero entries. Publishing is the
// actor's main cost when reports come one at a time, and most
// configurations have a handful of targets, so up to 64 targets the header
// and the entries share one allocation.
func newSnapshot(n int) *Snapshot {
	switch {
	case n <= 4:
		p := new(struct {
			s Snapshot
			a [4]entry
		})
		p.s.entries = p.a[:n]
		return &p.s
	case n <= 16:
		p := new(struct {
			s Snapshot
			a [16]entry
		})
		p.s.entries = p.a[:n]
		return &p.s
	case n <= 64:
		p := new(struct {
			s Snapshot
			a [64]entry
		})
		p.s.entries = p.a[:n]
		return &p.s
	}
	return &Snapshot{entries: make([]entry, n)}
}
