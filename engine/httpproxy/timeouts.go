package httpproxy

import (
	"context"
	"sync"
	"time"
)

// Phase names the part of an attempt a timeout limits. The phases of one
// attempt follow each other; each one's timer starts when the previous
// phase ends.
type Phase string

// The phases, with the configuration key that sets each limit.
const (
	// PhaseConnect: from the start of the attempt until a connection to
	// the upstream is ready (dial and TLS, or an idle connection taken
	// from the pool). timeouts.connect.
	PhaseConnect Phase = "connect"
	// PhaseHeaders: from the connection until the response status and
	// headers. timeouts.headers.
	PhaseHeaders Phase = "headers"
	// PhaseFirstToken: streams, from the headers until the first SSE
	// event that is not a comment or a ping. timeouts.first_token.
	PhaseFirstToken Phase = "first_token"
	// PhaseIdle: between two SSE events of a stream (comments and pings
	// do not count), and between two reads of a response body that is
	// not a stream. timeouts.idle.
	PhaseIdle Phase = "idle"
	// PhaseAttempt: the whole attempt, stream relay included.
	// timeouts.attempt.
	PhaseAttempt Phase = "attempt"
)

// TimeoutError is the error of an attempt cut by one of its timeouts. It is
// what the engine sees as the attempt's outcome error (classified as a
// timeout, docs/behaviour.md#outcome-classification), and what Result.End receives for a stream that stalled
// after commit. errors.Is(err, context.DeadlineExceeded) holds for it.
type TimeoutError struct {
	Phase Phase
	Limit time.Duration
}

func (e *TimeoutError) Error() string {
	return "reroute/httpproxy: upstream " + string(e.Phase) + " timeout (" + e.Limit.String() + ")"
}

// Timeout reports true, as net.Error's timeouts do.
func (e *TimeoutError) Timeout() bool { return true }

// Is makes errors.Is(err, context.DeadlineExceeded) true.
func (e *TimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// code is the error code of the in-band SSE error event for the timeout.
func (e *TimeoutError) code() string { return "upstream_" + string(e.Phase) + "_timeout" }

// watchdog enforces an attempt's phase timeouts with one timer: arm sets
// the deadline of the current phase, and when the timer fires past the
// deadline it cancels the attempt's context with a *TimeoutError as the
// cause. Re-arming to a later deadline (every stream event does) only
// stores it: the timer, when it fires early, sleeps again until the
// current deadline, so a long stream costs one timer, not one per event.
//
// After commit the attempt's own deadline (timeouts.attempt) stays in
// force through hard: no phase deadline may pass it.
type watchdog struct {
	mu        sync.Mutex
	t         *time.Timer
	cancel    context.CancelCauseFunc
	phase     Phase
	limit     time.Duration
	deadline  time.Time // of the current phase; zero = no limit
	scheduled time.Time // when t will fire; zero = not scheduled
	hard      time.Time // the attempt's deadline; zero = none
	hardLimit time.Duration
	stopped   bool
}

// arm starts phase p with limit d (0: no limit for the phase).
func (w *watchdog) arm(p Phase, d time.Duration) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	var dl time.Time
	if d > 0 {
		dl = now.Add(d)
	}
	if !w.hard.IsZero() && (dl.IsZero() || w.hard.Before(dl)) {
		dl, p, d = w.hard, PhaseAttempt, w.hardLimit
	}
	w.phase, w.limit, w.deadline = p, d, dl
	if dl.IsZero() || (!w.scheduled.IsZero() && !dl.Before(w.scheduled)) {
		return
	}
	w.scheduled = dl
	if w.t == nil {
		w.t = time.AfterFunc(dl.Sub(now), w.fire)
	} else {
		w.t.Reset(dl.Sub(now))
	}
}

// setHard bounds every later phase by the attempt's deadline.
func (w *watchdog) setHard(deadline time.Time, limit time.Duration) {
	w.mu.Lock()
	w.hard, w.hardLimit = deadline, limit
	w.mu.Unlock()
}

func (w *watchdog) fire() {
	w.mu.Lock()
	w.scheduled = time.Time{}
	if w.stopped || w.deadline.IsZero() {
		w.mu.Unlock()
		return
	}
	if now := time.Now(); now.Before(w.deadline) {
		w.scheduled = w.deadline
		w.t.Reset(w.deadline.Sub(now))
		w.mu.Unlock()
		return
	}
	err := &TimeoutError{Phase: w.phase, Limit: w.limit}
	w.stopped = true
	w.mu.Unlock()
	w.cancel(err)
}

// stop disarms the watchdog for good. It is idempotent.
func (w *watchdog) stop() {
	w.mu.Lock()
	w.stopped = true
	if w.t != nil {
		w.t.Stop()
	}
	w.mu.Unlock()
}
