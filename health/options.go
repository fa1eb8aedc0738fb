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
	// DropLogInterval is the least time between two "health reports
	// dropped" warnings of an actor, by its clock; each carries the count
	// since the one before. The actor checks at every expiry tick and at
	// Stop.
	DropLogInterval = 10 * time.Second
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
	clock     clock.Clock
	log       *zap.Logger
	onBlock   func(name string, kind Kind, d time.Duration)
	onEject   func(name string, d time.Duration, n int)
	onRecover func(name string)
	buffer    int
	interval  time.Duration
	stripes   int // 0 = from GOMAXPROCS; set by tests and benchmarks only
	rest      time.Duration
	facts     chan<- Fact // WithFactSink
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
// created (info), extended (debug), expired (info), each with the fields
// id (target id or provider name), scope ("target" or "provider"),
// apply_to ("global": the actor holds only shared blocks), kind, until and
// duration (created and extended: the time left; expired: how long the
// block lasted, left out when the actor did not see it start), and, at
// most once every DropLogInterval, "health reports dropped" (warn) with the
// count since the last one. nil keeps the default, zap.NewNop().
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithOnBlock sets a function the actor calls once for every block it
// creates: whenever an identifier that had no live block of a kind gets
// one (a Retry-After, or a latency trigger reached). name is the target id
// or provider name, kind the block's kind, and d its duration from now by
// the actor's clock. Extending a live block (a later Retry-After, another
// trigger while blocked) calls nothing.
//
// f runs on the actor's goroutine, after the snapshot holding the block is
// published, one call at a time: it needs no locking against itself, but
// whatever it shares with other goroutines must be safe for concurrent
// use. It must be quick and must not block: while it runs the actor applies
// no reports (they wait in the buffers, then coalesce, never block their
// callers) and Sync, Blocks and Stop wait for it. It must not call Sync,
// Blocks or Stop of the same actor, which would wait for itself; Snapshot
// and the Report methods are fine. A typical f increments a metric. nil
// (the default) calls nothing.
func WithOnBlock(f func(name string, kind Kind, d time.Duration)) Option {
	return func(o *options) { o.onBlock = f }
}

// WithOnEject sets a function the actor calls once per ejection by passive
// health: the identifier's name, how long the ejection lasts, and its
// number among consecutive ejections (1 for the first; more when a probe
// failed). WithOnRecover's function is called when an ejected or
// half-open identifier recovers. Both run on the actor's goroutine under
// the same rules as WithOnBlock's. nil calls nothing.
func WithOnEject(f func(name string, d time.Duration, n int)) Option {
	return func(o *options) { o.onEject = f }
}

// WithOnRecover: see WithOnEject.
func WithOnRecover(f func(name string)) Option {
	return func(o *options) { o.onRecover = f }
}

// WithBuffer sets how many reports may wait for the actor, summed over all
// stripes (each stripe gets an equal share, at least 1). When a stripe is
// full further reports into it are coalesced per identifier into a pending
// table (see Actor.Coalesced), which costs more per report but loses no
// Retry-After. n ≤ 0 keeps DefaultBuffer.
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
