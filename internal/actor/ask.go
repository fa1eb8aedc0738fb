package actor

import "context"

// Request is a query of type Q that carries its own reply channel, so an
// actor can answer without knowing who asked.
//
// Reply is buffered with room for exactly one value (see [NewRequest]); the
// actor answers once, with Respond, and never blocks doing so, even if the
// asker has already given up. Nobody closes Reply: the asker reads at most one
// value, and an unread reply is collected with the Request.
//
// A Request value is safe to copy and to pass between goroutines; Respond is
// safe for concurrent use. The zero value has a nil Reply, on which Respond
// drops the answer.
type Request[Q, R any] struct {
	Q     Q
	Reply chan R
}

// NewRequest returns a Request for q with a one-slot Reply channel.
func NewRequest[Q, R any](q Q) Request[Q, R] {
	return Request[Q, R]{Q: q, Reply: make(chan R, 1)}
}

// Respond stores the answer without blocking and reports whether it was
// stored. Only the first answer is kept; later ones return false, which keeps
// a buggy double reply from wedging the actor's loop.
func (r Request[Q, R]) Respond(v R) bool {
	select {
	case r.Reply <- v:
		return true
	default:
		return false
	}
}

// Ask sends a Request carrying q to inbox and waits for the answer.
//
// done must be closed once the actor no longer reads inbox; use
// [Lifecycle.Done]. Ask returns ctx.Err() if ctx ends first and [ErrStopped]
// if done is closed first, both while sending and while waiting, so it never
// hangs on a stopped actor. If ctx has already ended Ask returns ctx.Err()
// before looking at done; if done is already closed Ask returns ErrStopped
// without sending. An answer that was given before the actor stopped is
// still returned.
//
// Ask never closes inbox or done. It is safe for concurrent use; each call
// allocates its own reply channel so a late answer to an abandoned Ask can
// never be mistaken for another call's answer.
func Ask[Q, R any](ctx context.Context, inbox chan<- Request[Q, R], done <-chan struct{}, q Q) (R, error) {
	var zero R
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	// Without this, a buffered inbox with free space would accept the
	// request of a dead actor and only then report ErrStopped.
	select {
	case <-done:
		return zero, ErrStopped
	default:
	}

	req := NewRequest[Q, R](q)
	select {
	case inbox <- req:
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-done:
		return zero, ErrStopped
	}

	select {
	case r := <-req.Reply:
		return r, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-done:
		// The actor may have answered and then returned; select picks at
		// random among ready cases, so look at Reply once more. The answer
		// happens before done is closed, so it is visible here if it exists.
		select {
		case r := <-req.Reply:
			return r, nil
		default:
			return zero, ErrStopped
		}
	}
}
