package bench

import (
	"strconv"
	"time"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/health"
)

// Replicas in the simulator: Options.Replicas engines, each with its own
// health state, as a gateway's replicas each have their own actor. The
// requests arrive at them in turn (round robin, as a load balancer sends
// them). With Options.Share every fact one replica's state creates (a
// Retry-After or latency block created or extended, an ejection, a
// recovery, and a failure counted toward a streak or a success that ended
// one) reaches the others Options.ShareDelay later, applied with the
// import rule the health actor uses for facts from Redis
// (health.State.Import); without it each replica learns on its own. A
// failure streak is the fleet's: a replica's strike counts toward every
// replica's streak, so the fleet ejects after the threshold's worth of
// failures in a row among all of them, not each replica after its own.
//
// With Options.ProbeLockTTL > 0 the fleet-wide probe lock is modelled as
// redishealth takes it: one lock per identifier, asked for a lead (a
// quarter of the cooldown, at most 500 ms) before the ejection ends and
// kept for the TTL from then; the first replica to have the ejection gets
// it (with Redis the first to ask: the replicas are alike, so it is the
// same draw) and probes as usual; every other replica that has the
// ejection (its own or received) holds it ejected until the lock expires,
// unless the holder's outcome (a recovery, or the next ejection) reaches
// it first. The holder releases the lock with its outcome, so the next
// ejection's round starts free. Redis's round trips are not modelled.

// replica is one engine of a run and the state it reads.
type replica struct {
	e  *engine.Engine
	st *health.State
}

// shareEvent is a fact on its way to the other replicas.
type shareEvent struct {
	from int
	id   int
	f    health.Fact
}

// sharingHealth is engine.SyncHealth of one replica's state that also
// notices the facts a report creates and hands them to the simulation.
type sharingHealth struct {
	engine.Health
	s   *sim
	rep int
	st  *health.State
}

func (h *sharingHealth) ReportRetryAfter(id int, until int64) bool {
	return h.block(health.RetryAfter, id, func() { h.Health.ReportRetryAfter(id, until) })
}

func (h *sharingHealth) ReportLatency(id int, at int64, n int, window, block time.Duration) bool {
	return h.block(health.Latency, id, func() { h.Health.ReportLatency(id, at, n, window, block) })
}

func (h *sharingHealth) block(k health.Kind, id int, report func()) bool {
	prev := h.st.Deadline(k, id)
	report()
	if d := h.st.Deadline(k, id); d > prev {
		h.s.share(h.rep, id, health.Fact{Kind: k, Until: d})
	}
	return true
}

func (h *sharingHealth) ReportFailure(id int, at int64) bool {
	n0, u0 := h.st.Ejections(id)
	streak := h.st.Streak(id)
	h.Health.ReportFailure(id, at)
	n1, u1 := h.st.Ejections(id)
	switch {
	case n1 > 0 && (n1 != n0 || u1 != u0):
		h.s.ejected(h.rep, id, health.Fact{Kind: health.Ejected, Until: u1, Ejections: n1}, n0 > 0)
	case n1 == 0 && h.st.Streak(id) > streak:
		h.s.share(h.rep, id, health.Fact{Kind: health.Ejected, Strike: true, Until: at})
		h.s.trace(replicaEvent{Kind: "strike", Replica: h.rep, ID: id, At: at, Streak: h.st.Streak(id)})
	default:
		h.s.trace(replicaEvent{Kind: "failure", Replica: h.rep, ID: id, At: at, Ejections: n1, Until: u1})
	}
	return true
}

func (h *sharingHealth) ReportSuccess(id int, at int64) bool {
	n0, _ := h.st.Ejections(id)
	streak := h.st.Streak(id)
	h.Health.ReportSuccess(id, at)
	n1, _ := h.st.Ejections(id)
	switch {
	case n0 > 0 && n1 == 0:
		h.s.releaseLock(h.rep, id)
		h.s.trace(replicaEvent{Kind: "recovered", Replica: h.rep, ID: id, At: at})
		h.s.share(h.rep, id, health.Fact{Kind: health.Ejected, Recovered: true, Until: at})
	case n1 == 0 && streak > 0 && h.st.Streak(id) == 0:
		h.s.share(h.rep, id, health.Fact{Kind: health.Ejected, Clear: true, Until: at})
	}
	return true
}

// ejected shares an ejection replica rep made (again, after a failed
// probe, when probe): its probe lock released, the next round's taken or
// held, the fact sent.
func (s *sim) ejected(rep, id int, f health.Fact, probe bool) {
	if probe {
		s.releaseLock(rep, id)
	}
	s.trace(replicaEvent{Kind: "ejected", Replica: rep, ID: id, At: s.clk.now, Ejections: f.Ejections, Until: f.Until})
	s.lockOrHold(rep, id, f)
	s.share(rep, id, f)
}

// share sends a fact of replica from to the others, ShareDelay from now.
// The delay is the same for every fact, so they arrive in the order sent
// and a FIFO holds them.
func (s *sim) share(from, id int, f health.Fact) {
	if !s.sharing {
		return
	}
	s.shares = append(s.shares, shareEvent{from: from, id: id, f: f})
	s.h.push(s.clk.now+int64(s.shareDelay), evShare, -1)
}

// deliverShare applies the oldest fact in flight to every other replica.
// A strike that completes a replica's streak ejects it: that ejection is
// the replica's own, shared and locked like one its failures made.
func (s *sim) deliverShare() {
	ev := s.shares[0]
	s.shares = s.shares[1:]
	for i := range s.reps {
		if i == ev.from {
			continue
		}
		st := s.reps[i].st
		n0, _ := st.Ejections(ev.id)
		if !st.Import(ev.id, ev.f) || ev.f.Kind != health.Ejected {
			continue
		}
		n1, u1 := st.Ejections(ev.id)
		switch {
		case ev.f.Strike && n0 == 0 && n1 > 0:
			s.ejected(i, ev.id, health.Fact{Kind: health.Ejected, Until: u1, Ejections: n1}, false)
		case ev.f.Recovered:
			s.trace(replicaEvent{Kind: "recovery received", Replica: i, ID: ev.id, At: s.clk.now})
		case !ev.f.Strike && !ev.f.Clear:
			s.trace(replicaEvent{Kind: "ejection received", Replica: i, ID: ev.id, At: s.clk.now, Ejections: n1, Until: u1})
			s.lockOrHold(i, ev.id, ev.f)
		}
	}
}

// probeLock is who holds the probe lock of an identifier, and until when.
type probeLock struct {
	holder  int
	expires int64
}

// lockLead is the most by which redishealth asks for the probe lock
// before the ejection ends (a quarter of the time left when shorter).
const lockLead = 500 * time.Millisecond

// lockOrHold gives replica rep, which now has ejection f of id, the probe
// lock of id if nobody holds it when rep would ask; otherwise rep holds
// the identifier ejected until the lock expires.
func (s *sim) lockOrHold(rep, id int, f health.Fact) {
	if s.lockTTL <= 0 {
		return
	}
	ask := f.Until - int64(min(lockLead, time.Duration(f.Until-s.clk.now)/4))
	l, ok := s.locks[id]
	if !ok || l.expires <= ask {
		s.locks[id] = probeLock{holder: rep, expires: ask + int64(s.lockTTL)}
		s.trace(replicaEvent{Kind: "lock won", Replica: rep, ID: id, At: s.clk.now, Until: ask + int64(s.lockTTL)})
		return
	}
	if l.holder != rep {
		until := max(f.Until, l.expires)
		s.reps[rep].st.Import(id, health.Fact{Kind: health.Ejected, Hold: true, Until: until})
		s.trace(replicaEvent{Kind: "lock lost", Replica: rep, ID: id, At: s.clk.now, Until: until})
	}
}

// releaseLock drops the probe lock of id if rep holds it: its probe's outcome
// is known.
func (s *sim) releaseLock(rep, id int) {
	if l, ok := s.locks[id]; ok && l.holder == rep {
		delete(s.locks, id)
	}
}

// replicaEvent is one step of passive health in a replicated run, for
// tests that instrument one (sim.onReplica): a failure that counted toward
// a streak ("strike", Streak after it), one that did not ("failure": a
// probe's or an attempt begun before an ejection), an ejection made
// ("ejected") or received, a recovery made or received, and the probe
// lock won or lost (Until: when it expires, or the hold's end).
type replicaEvent struct {
	Kind      string
	Replica   int
	ID        int
	At        int64
	Streak    int
	Ejections int
	Until     int64
}

// trace hands an event to the run's observer, if any.
func (s *sim) trace(ev replicaEvent) {
	if s.onReplica != nil {
		s.onReplica(ev)
	}
}

// label names a run in the summary's header: the policy, and for several
// replicas how many and whether they shared ("reroute ×8 shared 5ms",
// "reroute ×8 alone").
func (r *Result) label() string {
	if r.Replicas <= 1 {
		return r.Policy
	}
	l := r.Policy + " ×" + strconv.Itoa(r.Replicas)
	if r.ShareDelayMs == nil {
		return l + " alone"
	}
	return l + " shared " + time.Duration(*r.ShareDelayMs*float64(time.Millisecond)).String()
}
