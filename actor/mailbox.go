package actor

import "sync/atomic"

// Mailbox is a bounded inbox for one-way messages ("tell"). Sending never
// blocks: when the buffer is full, or the actor has stopped, the message is
// dropped and counted. Dropping rather than blocking keeps a slow or dead
// actor from stalling everyone who talks to it.
//
// TrySend, Dropped and C are safe for concurrent use by any number of
// senders and receivers.
//
// The data channel is never closed, by anyone: stopping is signalled through
// the separate stop channel given to [NewMailbox], which belongs to the
// actor's owner (typically [Lifecycle.Stopping]). That is why TrySend can be
// called after stop without panicking. Messages still buffered at stop are
// simply left for the garbage collector.
//
// The zero value has no buffer and no receiver: every TrySend drops and
// counts. Use NewMailbox.
type Mailbox[T any] struct {
	ch      chan T
	stop    <-chan struct{}
	dropped atomic.Uint64
}

// NewMailbox returns a Mailbox holding up to size messages. Once stop is
// closed every TrySend drops; a nil stop means the mailbox never stops
// accepting. size 0 makes TrySend succeed only when a receiver is already
// waiting; a negative size panics, as make does.
func NewMailbox[T any](size int, stop <-chan struct{}) *Mailbox[T] {
	return &Mailbox[T]{ch: make(chan T, size), stop: stop}
}

// TrySend offers v without blocking and reports whether it was accepted. It
// returns false, and increments Dropped, when the buffer is full or stop has
// been closed.
//
// true means "buffered", not "processed": a message accepted in a race with
// stop may never be read. Safe for concurrent use, also after stop.
func (m *Mailbox[T]) TrySend(v T) bool {
	// Checked separately because a select with both cases ready picks at
	// random, and a stopped mailbox with free space must still refuse.
	select {
	case <-m.stop:
		m.dropped.Add(1)
		return false
	default:
	}
	select {
	case m.ch <- v:
		return true
	default:
		m.dropped.Add(1)
		return false
	}
}

// Dropped returns how many messages TrySend has refused so far. It only
// grows, is never reset, and is safe for concurrent use.
func (m *Mailbox[T]) Dropped() uint64 {
	return m.dropped.Load()
}

// C returns the receive side for the actor's loop. It is never closed, so
// the loop must also watch its stop channel rather than range over C. Safe
// for concurrent use; on the zero value it returns nil, which blocks forever
// in a select and so is harmless.
func (m *Mailbox[T]) C() <-chan T {
	return m.ch
}

// Len returns how many messages are buffered right now. It is a snapshot for
// metrics and tests, stale as soon as it returns. Safe for concurrent use.
func (m *Mailbox[T]) Len() int {
	return len(m.ch)
}
