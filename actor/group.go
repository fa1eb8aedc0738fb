package actor

import "sync"

// Group tracks goroutines so that none outlive their owner. Go starts a
// tracked goroutine; Close refuses new ones and waits for the running ones.
//
// The zero value is an open, empty Group ready to use. All methods are safe
// for concurrent use. A Group must not be copied after first use. It closes
// nothing of its callers'; the functions it runs must return on their own
// (typically by watching the owner's stop channel), or Close waits forever.
//
// A Group is single-use: once closed it stays closed.
type Group struct {
	mu     sync.Mutex
	n      int
	closed bool
	// idle is closed when n drops to zero and replaced when it rises again.
	// A counter plus channel, rather than sync.WaitGroup, because Wait may
	// legitimately run while Go is still adding from zero, which WaitGroup
	// forbids.
	idle chan struct{}
}

// Go runs f in a new tracked goroutine and reports true, or reports false
// without running f if the Group is closed. Go may be called from inside a
// tracked goroutine; once Close has begun such calls return false, so Close
// cannot be kept waiting by goroutines spawning more goroutines.
func (g *Group) Go(f func()) bool {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return false
	}
	if g.n == 0 {
		g.idle = make(chan struct{})
	}
	g.n++
	g.mu.Unlock()

	go func() {
		defer g.done()
		f()
	}()
	return true
}

func (g *Group) done() {
	g.mu.Lock()
	g.n--
	if g.n == 0 {
		close(g.idle)
	}
	g.mu.Unlock()
}

// Wait blocks until no tracked goroutine is running. It does not close the
// Group, so goroutines started after Wait returns are not covered, and one
// started while Wait is blocked may or may not be waited for. Wait must not
// be called from a tracked goroutine, since it would wait for itself.
func (g *Group) Wait() {
	g.mu.Lock()
	if g.n == 0 {
		g.mu.Unlock()
		return
	}
	idle := g.idle
	g.mu.Unlock()
	<-idle
}

// Close makes every later Go return false, then waits for all tracked
// goroutines to return. It is idempotent and safe to call from many
// goroutines at once; each caller returns once the Group is empty. Like Wait
// it must not be called from a tracked goroutine.
func (g *Group) Close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.Wait()
}
