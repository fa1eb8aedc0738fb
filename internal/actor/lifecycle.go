package actor

import "sync"

// Lifecycle runs one loop goroutine and stops it exactly once.
//
// The zero value is ready to use and means "not started". Stopping and Done
// may be called at any time, even before Start, and always return the same
// channel for a given Lifecycle, so they can be captured early (for example
// by a reporter that must refuse once Stop is called).
//
// All methods are safe for concurrent use. Lifecycle owns and closes both of
// its channels; callers only receive from them. A Lifecycle must not be copied
// after first use.
//
// A Lifecycle is single-use: once stopped it cannot be started again; make a
// new one instead.
type Lifecycle struct {
	// init is separate from mu so the channel getters, which Ask-style
	// callers hit on every request, cost an atomic load instead of a lock.
	init     sync.Once
	stopping chan struct{}
	done     chan struct{}

	mu      sync.Mutex
	started bool
	stopped bool
}

func (l *Lifecycle) lazyInit() {
	l.init.Do(func() {
		l.stopping = make(chan struct{})
		l.done = make(chan struct{})
	})
}

// Start runs loop in a new goroutine, passing it the channel returned by
// Stopping. The loop should return promptly once that channel is closed; it
// may also return earlier on its own, which closes Done without closing
// Stopping.
//
// Start returns [ErrStarted] if a loop was already started, and [ErrStopped]
// if Stop was called first; in both cases loop is not run. Start is safe for
// concurrent use: exactly one concurrent caller wins.
//
// If loop panics the process crashes as for any goroutine; Lifecycle does not
// recover, because a half-dead actor is worse than a crash.
func (l *Lifecycle) Start(loop func(stop <-chan struct{})) error {
	l.lazyInit()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.stopped:
		return ErrStopped
	case l.started:
		return ErrStarted
	}
	l.started = true
	go func() {
		defer close(l.done)
		loop(l.stopping)
	}()
	return nil
}

// Stop closes Stopping and waits until the loop has returned (Done is
// closed). It is idempotent and safe to call from many goroutines at once;
// every caller returns only after the loop has ended. If the loop was never
// started, Stop closes both channels itself, returns immediately, and any
// later Start fails with [ErrStopped].
//
// Stop must not be called from inside the loop, since it would wait for
// itself; a loop that wants to end simply returns.
func (l *Lifecycle) Stop() {
	l.lazyInit()
	l.mu.Lock()
	if !l.stopped {
		l.stopped = true
		close(l.stopping)
		if !l.started {
			// Nobody else will ever close done, and Done must still mean
			// "no loop is running".
			close(l.done)
		}
	}
	l.mu.Unlock()
	<-l.done
}

// Stopping returns a channel that is closed when Stop is first called. It is
// the same channel the loop receives. It is not closed when the loop returns
// on its own; use Done for "the actor is gone". Safe for concurrent use.
func (l *Lifecycle) Stopping() <-chan struct{} {
	l.lazyInit()
	return l.stopping
}

// Done returns a channel that is closed once the loop has returned, or when
// Stop is called on a Lifecycle that was never started. After Done is closed
// nothing reads the actor's inboxes any more, which is why [Ask] takes this
// channel. Safe for concurrent use.
func (l *Lifecycle) Done() <-chan struct{} {
	l.lazyInit()
	return l.done
}
