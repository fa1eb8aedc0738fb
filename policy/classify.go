package policy

import (
	"errors"
	"net/http"
	"time"
)

// Outcome is what one attempt produced (docs/behaviour.md#terms).
type Outcome struct {
	// Status is the HTTP status, or 0 when no response arrived.
	Status int
	// Header holds the response headers; may be nil. Keys are expected in
	// canonical form, as net/http produces them.
	Header http.Header
	// Err is a transport error or timeout; non-nil means there is no usable
	// response and the attempt classifies as a timeout (or as a latency
	// failure when it wraps ErrHighLatency).
	Err error
	// TTFB is the time to the response status and headers (or first byte).
	TTFB time.Duration
	// Total is the time until the whole answer was read; 0 when not known
	// yet (a stream handed to the caller at its first byte).
	Total time.Duration
	// Final marks an answer the caller knows must be delivered as it is,
	// whatever its status, such as a content-policy refusal (a property of
	// the prompt, not of the target). It classifies as PassThrough.
	Final bool
	// NoSameTarget marks a failure that retrying the same target cannot
	// cure, such as a context-length rejection: the request may fail over
	// but never sends to this target again.
	NoSameTarget bool
	// NoSameProvider marks a failure the provider said not to retry
	// (x-should-retry: false, as on an exhausted quota): the request sends
	// to no target of this provider again, but may fail over to another
	// provider when its policy allows.
	NoSameProvider bool
}

// ErrHighLatency marks an attempt the caller abandoned because it was too
// slow: it classifies as a latency failure, resolved with on_high_latency.
var ErrHighLatency = errors.New("reroute: attempt abandoned for high latency")

// Class is the classification of an outcome (docs/behaviour.md#outcome-classification).
type Class uint8

// The classes.
const (
	// Success: a 2xx under the latency threshold. Returned.
	Success Class = iota
	// SlowSuccess: a 2xx over the threshold. Returned; a latency event.
	SlowSuccess
	// HTTPError: a 4xx or 5xx. Retriable.
	HTTPError
	// Timeout: a timeout or transport error. Retriable.
	Timeout
	// LatencyFailure: an attempt abandoned for latency. Retriable.
	LatencyFailure
	// PassThrough: 1xx, 3xx, or any outcome without a retry policy.
	// Returned as it is.
	PassThrough
)

var classNames = [...]string{"success", "slow_success", "http_error", "timeout", "high_latency", "pass_through"}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "unknown"
}

// Retriable reports whether the class may lead to another attempt.
func (c Class) Retriable() bool { return c == HTTPError || c == Timeout || c == LatencyFailure }

// Measured returns the latency that on_high_latency compares with its
// threshold: TTFB or Total per measure. A timeout never got its first
// byte, so its elapsed time (Total) stands in for TTFB. 0 means not known.
func (l *LatencyRule) Measured(o *Outcome) time.Duration {
	if l.Measure == MeasureTotal || (o.Err != nil && o.TTFB == 0) {
		return o.Total
	}
	return o.TTFB
}

// Classify classifies an outcome under r (docs/behaviour.md#outcome-classification). event reports that a
// latency event must be recorded, with measured the value that fired it.
// A nil r (no retry_policy) classifies everything as PassThrough.
func (r *Rules) Classify(o *Outcome) (c Class, event bool, measured time.Duration) {
	if r == nil || o.Final {
		return PassThrough, false, 0
	}
	if o.Err != nil {
		c = Timeout
		if errors.Is(o.Err, ErrHighLatency) {
			c = LatencyFailure
		}
	} else {
		switch {
		case o.Status >= 200 && o.Status < 300:
			c = Success
		case o.Status >= 400 && o.Status < 600:
			return HTTPError, false, 0
		default:
			return PassThrough, false, 0
		}
	}
	if l := r.Latency; l != nil {
		if m := l.Measured(o); m > l.Threshold {
			event, measured = true, m
			if c == Success {
				c = SlowSuccess
			}
		} else if c == LatencyFailure {
			// The caller gave up for latency; count it as an event even
			// if it did not measure past our threshold.
			event, measured = true, m
		}
	}
	return c, event, measured
}

// Resolve returns the action for a retriable class (docs/behaviour.md#status-code-resolution), and the key
// that counts its failures.
func (r *Rules) Resolve(c Class, status int) (Action, Key) {
	switch c {
	case Timeout:
		return r.Timeout, KeyTimeout
	case LatencyFailure:
		if r.Latency != nil {
			return r.Latency.Action, KeyLatency
		}
		return r.Default, KeyLatency
	}
	if status >= 100 && status <= 599 {
		if i := r.first[status-100]; i != 0 {
			return r.actions[i-1], Key(status)
		}
	}
	return r.Default, Key(status)
}
