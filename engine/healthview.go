package engine

import (
	"time"

	"github.com/reroute-go/reroute/health"
)

// Health is the shared block state a request reads and reports to. The
// engine's default is its health actor: View returns the actor's current
// immutable snapshot and reports are non-blocking sends. SyncHealth adapts
// a health.State for single-goroutine use (the simulator).
type Health interface {
	// View returns the state to decide on. A Machine takes one view per
	// decision and reads only that one, so that a decision never sees
	// half of a change.
	View() View
	// ReportRetryAfter records a Retry-After block of identifier id.
	ReportRetryAfter(id int, until int64) bool
	// ReportLatency records a latency event of identifier id.
	ReportLatency(id int, at int64, minTriggers int, window, block time.Duration) bool
	// ReportFailure records a failure of identifier id that counts for
	// passive health; ReportSuccess an answer that shows id works.
	ReportFailure(id int, at int64) bool
	ReportSuccess(id int, at int64) bool
}

// View is a consistent picture of the shared block state.
// *health.Snapshot is one.
type View interface {
	// Lookup says whether target is blocked at now (unix nanoseconds).
	Lookup(target int, now int64) health.Status
	// Clear reports that no block is recorded for target, so that the
	// request path can skip reading the clock.
	Clear(target int) bool
	// Claim tries to make the caller the one probe of half-open
	// identifier id, holding the claim until the given time; Release
	// gives up such a claim.
	Claim(id int, now, until int64) bool
	Release(id int, until int64)
	// Attention reports that a success of identifier id must be reported:
	// it has a failure streak or an ejection, or failure reports not
	// applied yet.
	Attention(id int) bool
}

type actorHealth struct{ a *health.Actor }

func (h actorHealth) View() View { return h.a.Snapshot() }
func (h actorHealth) ReportRetryAfter(id int, until int64) bool {
	return h.a.ReportRetryAfter(id, until)
}
func (h actorHealth) ReportLatency(id int, at int64, n int, window, block time.Duration) bool {
	return h.a.ReportLatency(id, at, n, window, block)
}
func (h actorHealth) ReportFailure(id int, at int64) bool { return h.a.ReportFailure(id, at) }
func (h actorHealth) ReportSuccess(id int, at int64) bool { return h.a.ReportSuccess(id, at) }

// SyncHealth returns a Health that applies every report to s at once. s is
// not safe for concurrent use, and neither is the result: use it with one
// goroutine, as the simulator does.
func SyncHealth(s *health.State) Health { return syncHealth{s} }

type syncHealth struct{ s *health.State }

func (h syncHealth) View() View { return stateView(h) }
func (h syncHealth) ReportRetryAfter(id int, until int64) bool {
	h.s.BlockRetryAfter(id, until)
	return true
}
func (h syncHealth) ReportLatency(id int, at int64, n int, window, block time.Duration) bool {
	h.s.LatencyEvent(id, at, n, window, block)
	return true
}
func (h syncHealth) ReportFailure(id int, at int64) bool {
	h.s.Failure(id, at)
	return true
}
func (h syncHealth) ReportSuccess(id int, at int64) bool {
	h.s.Success(id, at)
	return true
}

// stateView reads a health.State directly; it is only as consistent as the
// single goroutine that owns the state makes it.
type stateView struct{ s *health.State }

func (v stateView) Lookup(t int, now int64) health.Status { return v.s.Lookup(t, now) }
func (v stateView) Clear(int) bool                        { return false }
func (v stateView) Claim(id int, now, until int64) bool   { return v.s.Claim(id, now, until) }
func (v stateView) Release(id int, _ int64)               { v.s.Release(id) }
func (v stateView) Attention(id int) bool                 { return v.s.Suspect(id) }

// view is what a Machine reads during one decision: the health actor's
// snapshot, read through concrete calls the compiler inlines (the success
// path reads it twice), or the View of a Health given WithHealth.
type view struct {
	snap  *health.Snapshot
	other View // nil with the engine's own actor
}

func (v *view) Lookup(t int, now int64) health.Status {
	if v.other != nil {
		return v.other.Lookup(t, now)
	}
	return v.snap.Lookup(t, now)
}

func (v *view) Clear(t int) bool {
	if v.other != nil {
		return v.other.Clear(t)
	}
	return v.snap.Clear(t)
}

func (v *view) Claim(id int, now, until int64) bool {
	if v.other != nil {
		return v.other.Claim(id, now, until)
	}
	return v.snap.Claim(id, now, until)
}

func (v *view) Attention(id int) bool {
	if v.other != nil {
		return v.other.Attention(id)
	}
	return v.snap.Attention(id)
}

func (v *view) Release(id int, until int64) {
	if v.other != nil {
		v.other.Release(id, until)
		return
	}
	v.snap.Release(id, until)
}
