package health

import "github.com/reroute-go/reroute/internal/actor"

// ErrStopped is returned by [Actor.Blocks] and [Actor.Sync] once the actor
// has stopped. Compare with errors.Is. It is a plain value, safe for
// concurrent use.
var ErrStopped = actor.ErrStopped
