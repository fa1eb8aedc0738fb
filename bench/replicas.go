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
// recovery) reaches the others Options.ShareDelay later, applied with the
// import rule the health actor uses for facts from Redis
// (health.State.Import); without it each replica learns on its own.
//
// With Options.ProbeLockTTL > 0 the fleet-wide probe lock is modelled: the
// first replica to eject an identifier for the n-th time holds the lock of
// that ejection and probes it as usual; every other replica that has the
// ejection (its own or received) holds it ejected until the ejection's end
// plus the lock's TTL, unless the holder's outcome (a recovery, or the next
// ejection) reaches it first. Redis's round trips are not modelled.

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
	h.Health.ReportFailure(id, at)
	if n1, u1 := h.st.Ejections(id); n1 > 0 && (n1 != n0 || u1 != u0) {
		f := health.Fact{Kind: health.Ejected, Until: u1, Ejections: n1}
		h.s.lockOrHold(h.rep, id, f)
		h.s.share(h.rep, id, f)
	}
	return true
}

func (h *sharingHealth) ReportSuccess(id int, at int64) bool {
	n0, _ := h.st.Ejections(id)
	h.Health.ReportSuccess(id, at)
	if n1, _ := h.st.Ejections(id); n0 > 0 && n1 == 0 {
		h.s.share(h.rep, id, health.Fact{Kind: health.Ejected, Recovered: true})
	}
	return true
}

// share sends a fact of replica from to the others, ShareDelay from now.
// The delay is the same for every fact, so they arrive in the order sent
// and a FIFO holds them.
func (s *sim) share(from, id int, f health.Fact) {
	s.shares = append(s.shares, shareEvent{from: from, id: id, f: f})
	s.h.push(s.clk.now+int64(s.shareDelay), evShare, -1)
}

// deliverShare applies the oldest fact in flight to every other replica.
func (s *sim) deliverShare() {
	ev := s.shares[0]
	s.shares = s.shares[1:]
	for i := range s.reps {
		if i != ev.from && s.reps[i].st.Import(ev.id, ev.f) && ev.f.Kind == health.Ejected && !ev.f.Recovered {
			s.lockOrHold(i, ev.id, ev.f)
		}
	}
}

// probeLock is who holds the probe lock of an identifier's ejection.
type probeLock struct {
	n, holder int
}

// lockOrHold gives replica rep, which now has ejection f of id, the probe
// lock of that ejection if no other replica has it; otherwise rep holds
// the identifier ejected for the lock's TTL past the ejection's end.
func (s *sim) lockOrHold(rep, id int, f health.Fact) {
	if s.lockTTL <= 0 {
		return
	}
	if l, ok := s.locks[id]; !ok || l.n < f.Ejections {
		s.locks[id] = probeLock{n: f.Ejections, holder: rep}
		return
	}
	if s.locks[id].holder != rep {
		s.reps[rep].st.Import(id, health.Fact{Kind: health.Ejected, Hold: true, Until: f.Until + int64(s.lockTTL)})
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
