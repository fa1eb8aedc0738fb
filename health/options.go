package health

import (
	"time"

	"github.com/benbjohnson/clock"
	"go.uber.org/zap"
)

// Defaults of the options.
const (
	// DefaultBuffer is the default number of reports that may wait for the
	// actor, summed over all stripes.
	DefaultBuffer = 1024
	// DefaultExpiryInterval is how often the actor drops ended blocks by
	// default.
	DefaultExpiryInterval = time.Second
)

// defaultRest is how long the actor leaves the doorbell unanswered after a
// drain. 1 ms because that is what a shorter timer gets anyway on an idle
// Linux machine (measured p50 1.08 ms for a 20 µs timer), and because it
// bounds the wake-ups a burst of reports costs to a thousand a second.
const defaultRest = time.Millisecond

// Option configures an [Actor] at [New]. Options are plain functions, safe
// to share and reuse; a nil Option is ignored.
type Option func(*options)

type options struct {
	clock    clock.Clock
	log      *zap.Logger
	buffer   int
	interval time.Duration
	stripes  int // 0 = from GOMAXPROCS; set by tests and benchmarks only
	rest     time.Duration
}

func defaults() options {
	return options{clock: clock.New(), log: zap.NewNop(), buffer: DefaultBuffer, interval: DefaultExpiryInterval, rest: defaultRest}
}

// WithClock sets the clock the actor reads when it expires blocks and
// stamps its logs, and whose Ticker drives periodic expiry. Reports carry
// their own times, so the clock never touches the request path. nil keeps
// the default, clock.New() (the system clock).
func WithClock(c clock.Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock = c
		}
	}
}

// WithLogger sets the logger on which the actor logs block transitions:
// created (info), extended (debug), expired (info). nil keeps the default,
// zap.NewNop().
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithBuffer sets how many reports may wait for the actor, summed over all
// stripes (each stripe gets an equal share, at least 1). When a stripe is
// full further reports into it are dropped and counted. n ≤ 0 keeps
// DefaultBuffer.
func WithBuffer(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.buffer = n
		}
	}
}

// WithExpiryInterval sets how often the actor drops blocks that have ended
// and republishes the snapshot so that Clear turns true again. Correctness
// does not depend on it (readers compare deadlines with now). d ≤ 0 keeps
// DefaultExpiryInterval.
func WithExpiryInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.interval = d
		}
	}
}

// withStripes fixes the number of report stripes (rounded up to a power of
// two); for tests and benchmarks comparing designs.
func withStripes(n int) Option {
	return func(o *options) { o.stripes = n }
}

// withRest sets the actor's rest between drains; 0 drains on every ring.
// For benchmarks.
func withRest(d time.Duration) Option {
	return func(o *options) { o.rest = d }
}
