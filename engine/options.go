package engine

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/benbjohnson/clock"
	"go.uber.org/zap"

	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

// Option configures an Engine at New. Options are runtime wiring (logger,
// clock, randomness, hooks); what a user writes in YAML is the
// policy.Config.
type Option func(*options)

type options struct {
	logger *zap.Logger
	clock  clock.Clock
	rnd    rand.Source
	hooks  Hooks
	health Health
	// noHedge turns hedging off (WithoutHedging)
	noHedge bool
	// healthOpts are the host's options of the health actor
	// (WithHealthOptions), laid after the engine's own.
	healthOpts []health.Option
}

// WithLogger sets the logger. The default is zap.NewNop(). Request-path
// events are logged at debug level behind a level check cached at New, so
// a production logger at info costs the request path nothing; exhaustion
// is logged at warn. Credentials and bodies are never logged.
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithClock sets the clock that waits, per-attempt timeouts, blocks and the
// health actor use. The default is the real clock.
func WithClock(c clock.Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock = c
		}
	}
}

// WithSeed makes the random provider pick and backoff jitter reproducible
// for a given sequence of decisions: they draw from one PCG source seeded
// with seed, guarded by a mutex. The default draws from math/rand/v2's
// goroutine-safe global source, which needs no lock.
func WithSeed(seed uint64) Option {
	return func(o *options) {
		o.rnd = &lockedSource{src: rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)}
	}
}

// WithRand sets the random source. It must be safe for concurrent use if
// Do is called from several goroutines.
func WithRand(src rand.Source) Option {
	return func(o *options) {
		if src != nil {
			o.rnd = src
		}
	}
}

// WithHooks sets callbacks a host can export as metrics. They run on the
// request's goroutine (Block also on the health actor's, see Hooks) and
// must be quick and safe for concurrent use. A hook that panics ends its
// request with a *PanicError (on the actor it is logged and ignored).
func WithHooks(h Hooks) Option {
	return func(o *options) { o.hooks = h }
}

// WithHealth replaces the engine's health actor by h. It exists for the
// simulator, which drives requests one at a time in virtual time and wants
// every fact applied at once (see SyncHealth); with it the engine starts no
// goroutine. If h also has the methods ReportTTFB(t int, d time.Duration)
// bool and TTFB(t, k int) (time.Duration, bool), as health.Actor does, a
// hedge's delay_percentile reads from it; otherwise such a hedge waits its
// max_delay_ms.
func WithHealth(h Health) Option {
	return func(o *options) { o.health = h }
}

// WithoutHedging turns every retry_policy's hedge off: the engine runs as
// if no policy had a hedge block. It is for comparisons (loadgen's
// no-hedge baseline) and for a host that wants a switch to stop hedging at
// once without editing the configuration.
func WithoutHedging() Option {
	return func(o *options) { o.noHedge = true }
}

// WithHealthOptions passes options to the health actor the engine starts,
// after the engine's own (clock, logger, hooks): a host attaches, for
// example, a fact sink (health.WithFactSink) to share health facts with
// other replicas. Options that replace the engine's own (WithClock,
// WithLogger, the hooks) take precedence over them; prefer the engine's
// options for those. Ignored under WithHealth. Repeated calls add up.
func WithHealthOptions(opts ...health.Option) Option {
	return func(o *options) { o.healthOpts = append(o.healthOpts, opts...) }
}

// Hooks are optional callbacks for metrics. A nil field is skipped.
type Hooks struct {
	// Attempt is called after every attempt with its outcome class.
	Attempt func(AttemptEvent)
	// Retry is called when the engine decides to make another attempt.
	Retry func(RetryEvent)
	// Continue is called when the engine decides to make an attempt that
	// continues a committed answer that failed (Engine.Continue), instead
	// of Retry.
	Continue func(ContinueEvent)
	// Exhausted is called once for every exhausted request.
	Exhausted func(Reason)
	// Block is called once per block created, with the blocked
	// identifier (a target id or a provider name), the kind and how long
	// the block lasts: for a shared block (apply_to: global) by the health
	// actor, on its goroutine, whichever requests reported the facts; for a
	// request's own block (apply_to: request) on that request's goroutine.
	// Extending a live block calls nothing, and neither do facts that
	// create no block (a latency event under min_triggers). Under
	// WithHealth only request blocks are told.
	Block func(id string, kind health.Kind, d time.Duration)
	// Ejected is called, by the health actor, once per ejection of a
	// target or provider by passive health, with how long it lasts and
	// its number among consecutive ejections (1, or more after failed
	// probes). Recovered is called when an ejected one recovers. Probe is
	// called on a request's goroutine when the request wins the one probe
	// of a half-open target (for a hedge that goes to one, on the
	// goroutine that starts the hedge, as Hedge). Under WithHealth only
	// Probe is called.
	Ejected   func(id string, d time.Duration, n int)
	Recovered func(id string)
	Probe     func(target string)
	// End is called by Result.End when the caller reports how a
	// delivered stream ended: its whole duration, and the failure after
	// commit if any. A non-streamed answer's duration is in its
	// AttemptEvent already.
	End func(EndEvent)
	// Latency is called with every latency measurement the policy compares
	// with a threshold (on_high_latency), over the threshold or not; a
	// stream measured in total is measured when it ends (Result.End).
	Latency func(target string, d time.Duration)
	// Hedge is called when a request starts a hedge beside its attempt
	// in flight (docs/behaviour.md#hedging), on the goroutine that
	// starts it (not the request's).
	Hedge func(HedgeEvent)
}

// HedgeEvent describes a hedge started beside a slow attempt.
type HedgeEvent struct {
	From, To           string        // the slow attempt's target and the hedge's
	FromIndex, ToIndex int           // their indices in the compiled configuration
	Number             int           // the hedge's attempt number
	Delay              time.Duration // how long the slow attempt ran before its hedge: the delay decided when it started
}

// AttemptEvent describes one finished attempt.
type AttemptEvent struct {
	Target string
	Index  int // the target's index in the compiled configuration (Engine.Compiled), for per-target metrics without a map lookup
	Number int
	Status int
	Class  policy.Class
	TTFB   time.Duration // as the call reported it (or the engine measured it); 0 when unknown
	Total  time.Duration // 0 when unknown, as for a stream handed over at its first byte
	Err    error         // the transport error or timeout, if any
	// Abandoned: the attempt lost the race with a hedge (or its hedge lost
	// to it) and was cancelled; its outcome was neither a success nor a
	// failure of its target. Class is then Timeout.
	Abandoned bool
}

// EndEvent describes how a delivered stream ended (Result.End).
type EndEvent struct {
	Target string
	Index  int           // the target's index in the compiled configuration
	Total  time.Duration // the attempt's whole duration
	Err    error         // a failure after commit, or nil
}

// RetryEvent describes a decision to retry.
type RetryEvent struct {
	From, To           string
	FromIndex, ToIndex int // the targets' indices in the compiled configuration
	Number             int // the number of the attempt about to be made
	Wait               time.Duration
	Fallback           int // position in fallback_models, or -1 (same target or random pick)
}

// lockedSource makes a seeded source safe for concurrent use.
type lockedSource struct {
	mu  sync.Mutex
	src *rand.PCG
}

func (s *lockedSource) Uint64() uint64 {
	s.mu.Lock()
	v := s.src.Uint64()
	s.mu.Unlock()
	return v
}

// globalSource is math/rand/v2's global generator: per-thread state, no
// lock, safe for concurrent use.
type globalSource struct{}

func (globalSource) Uint64() uint64 { return rand.Uint64() }
