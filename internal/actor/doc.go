// Package actor holds the small lifecycle and request pieces that the
// health actor builds on. The actor loop itself lives in package health,
// which owns the state; this package only gives it a way to start and stop
// exactly once and to answer requests without hanging on a stopped actor.
//
// It is internal: only packages of this module use it. It imports only the
// standard library.
//
// # Pieces
//
//   - [Lifecycle] runs one loop goroutine and stops it exactly once.
//   - [Request] and [Ask] carry a query to an actor and bring the answer
//     back, giving up when the caller's context ends or the actor is gone.
//   - [ErrStopped] is returned by everything that could not reach the actor
//     because it has stopped.
//
// # Ownership
//
// No type here closes a channel that a sender might still write to. Data
// channels are never closed at all; "stopped" is always signalled through a
// separate channel that only the stopping side closes. This is what makes
// sending after Stop safe: it is a refused message, never a panic.
//
// # Usage
//
// A typical actor embeds a Lifecycle and owns a request channel for
// queries, and selects over it in its loop:
//
//	type Counter struct {
//		life actor.Lifecycle
//		asks chan actor.Request[string, int]
//	}
//
//	func NewCounter() (*Counter, error) {
//		c := &Counter{asks: make(chan actor.Request[string, int])}
//		return c, c.life.Start(c.loop)
//	}
//
//	func (c *Counter) loop(stop <-chan struct{}) {
//		counts := map[string]int{}
//		for {
//			select {
//			case <-stop:
//				return
//			case req := <-c.asks:
//				counts[req.Q]++
//				req.Respond(counts[req.Q]) // never blocks the loop
//			}
//		}
//	}
//
//	func (c *Counter) Count(ctx context.Context, name string) (int, error) {
//		// Done, not Stopping: the loop answers until it has really returned.
//		return actor.Ask(ctx, c.asks, c.life.Done(), name)
//	}
//
//	func (c *Counter) Stop() { c.life.Stop() }
//
// After Stop returns, Count returns ErrStopped without blocking.
package actor
