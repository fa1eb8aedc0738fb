// Package actor holds the small lifecycle and mailbox pieces that the
// project's actors share. The actor loops themselves live in the packages
// that own the state; this package only gives them a common way to start,
// stop, receive fire-and-forget messages, answer requests, and keep track of
// helper goroutines so that none outlive their owner.
//
// It imports only the standard library so any package may depend on it.
//
// # Pieces
//
//   - [Lifecycle] runs one loop goroutine and stops it exactly once.
//   - [Mailbox] is a bounded, never-blocking inbox for one-way messages
//     ("tell"); it counts what it had to drop instead of applying back
//     pressure to the sender.
//   - [Request] and [Ask] carry a query to an actor and bring the answer
//     back, giving up when the caller's context ends or the actor is gone.
//   - [Group] tracks extra goroutines an actor spawns and refuses new ones
//     once it is closed.
//   - [ErrStopped] is returned by everything that could not reach the actor
//     because it has stopped.
//
// # Ownership
//
// No type here closes a channel that a sender might still write to. Data
// channels are never closed at all; "stopped" is always signalled through a
// separate channel that only the stopping side closes. This is what makes
// sending after Stop safe: it is a dropped message, never a panic.
//
// # Usage
//
// A typical actor embeds a Lifecycle, owns a Mailbox for events and a
// request channel for queries, and selects over them in its loop:
//
//	type Counter struct {
//		life   actor.Lifecycle
//		events *actor.Mailbox[string]
//		asks   chan actor.Request[string, int]
//	}
//
//	func NewCounter() (*Counter, error) {
//		c := &Counter{asks: make(chan actor.Request[string, int])}
//		// Bind the mailbox to Stopping so Tell drops as soon as Stop is called.
//		c.events = actor.NewMailbox[string](64, c.life.Stopping())
//		return c, c.life.Start(c.loop)
//	}
//
//	func (c *Counter) loop(stop <-chan struct{}) {
//		counts := map[string]int{}
//		for {
//			select {
//			case <-stop:
//				return
//			case name := <-c.events.C():
//				counts[name]++
//			case req := <-c.asks:
//				req.Respond(counts[req.Q]) // never blocks the loop
//			}
//		}
//	}
//
//	func (c *Counter) Tell(name string) bool { return c.events.TrySend(name) }
//
//	func (c *Counter) Count(ctx context.Context, name string) (int, error) {
//		// Done, not Stopping: the loop answers until it has really returned.
//		return actor.Ask(ctx, c.asks, c.life.Done(), name)
//	}
//
//	func (c *Counter) Stop() { c.life.Stop() }
//
// select chooses at random among ready cases, so an answer is not guaranteed
// to reflect every message told before the question; when it must, drain C
// without blocking before responding (the package Example does this).
//
// After Stop returns, Tell reports false and counts a drop, and Count
// returns ErrStopped without blocking.
package actor
