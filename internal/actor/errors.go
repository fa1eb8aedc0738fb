package actor

import "errors"

// ErrStopped is returned when the actor being addressed has stopped (or was
// stopped before it started), so the operation can never complete. Callers
// compare with errors.Is. It is a plain value and safe for concurrent use.
var ErrStopped = errors.New("actor: stopped")

// ErrStarted is returned by [Lifecycle.Start] when a loop has already been
// started on that Lifecycle. A Lifecycle runs at most one loop in its life,
// because Stop's promise ("the loop has returned") only makes sense for one.
var ErrStarted = errors.New("actor: already started")
