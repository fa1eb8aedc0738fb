package engine

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

// Engine runs requests through retries and failover. Create it with New;
// it is safe for concurrent use by any number of goroutines. Close it when
// done: that stops the health actor.
type Engine struct {
	env // what every request's Machine shares

	cfg       *policy.Config
	actor     *health.Actor // nil under WithHealth
	clock     clock.Clock
	wallClock bool // the clock is the system's, so a context's deadline can be compared with it directly

	_      [64]byte // keep the shards off the cache line of the read-mostly fields above
	shards [numShards]shard
	// retrying counts requests holding a max_retrying_requests slot. It is
	// the one counter every failover writes, so it has a cache line of its
	// own: beside the read-mostly fields, each write would evict them from
	// the other core (measured: failover on 2 cores went from 230 to 680
	// ns/op).
	retrying  atomic.Int64
	_         [56]byte
	closed    atomic.Bool
	closing   chan struct{} // closed by Close: interrupts waits
	wake      chan struct{} // a Do that ends after Close nudges Close
	closeOnce sync.Once
}

// Call performs one attempt against a.Target within ctx, which carries the
// attempt's deadline, and reports what happened. It is called once per
// attempt, on the goroutine that called Do; but a request whose policy
// hedges (docs/behaviour.md#hedging) may have two Calls running at once,
// the hedge's on another goroutine, so a Call must be safe for concurrent
// use within one request: each call keeps its own attempt state. The
// losing call's ctx is cancelled with cause ErrAbandoned and its outcome is
// not delivered. A Call that returns a response the engine does not
// deliver (a failed or abandoned attempt) keeps ownership of it: release it
// when the next attempt starts or when Do returns (Result.Number says
// which attempt was delivered).
type Call func(ctx context.Context, a Attempt) policy.Outcome

// Attempt tells a Call where to send one attempt.
type Attempt struct {
	Target   string                // target id, "provider/model"
	Model    string                // the model name without its provider prefix
	Index    int                   // the target's index in the compiled configuration
	Number   int                   // overall attempt number of the request, from 1
	Provider *policy.ModelProvider // the target's configuration entry (base_url, credentials, timeouts)
	Wait     time.Duration         // how long the engine waited before this attempt (backoff, Retry-After); 0 for most
	// Continuation: the attempt continues an answer another attempt began
	// and could not finish (Engine.Continue); its answer is relayed after
	// the text already delivered.
	Continuation bool
	// Hedge says the attempt is a hedge (docs/behaviour.md#hedging):
	// attempt Number-1 may still be running beside it, on another
	// goroutine, and must not be released yet.
	Hedge bool
}

// New builds an engine from cfg. It finalizes cfg (filling defaults), refuses
// a configuration with errors (returning the *policy.Error), logs its
// warnings, and starts the health actor unless WithHealth is given. cfg must
// not be modified afterwards.
func New(cfg *policy.Config, opts ...Option) (*Engine, error) {
	if cfg == nil {
		return nil, errors.New("reroute: nil configuration")
	}
	wall := clock.New()
	o := options{logger: zap.NewNop(), clock: wall, rnd: globalSource{}}
	for _, opt := range opts {
		opt(&o)
	}
	if !cfg.Finalized() {
		// Parse and Load finalize and return the warnings to their caller;
		// only a Config built in Go is finalized here, and only then are
		// its warnings logged here.
		warns, err := cfg.Finalize()
		if err != nil {
			return nil, err
		}
		for _, w := range warns {
			o.logger.Warn("reroute configuration warning", zap.String("path", w.Path), zap.String("model", w.Model), zap.String("warning", w.Message))
		}
	}
	c := cfg.Compiled()
	e := &Engine{
		cfg:       cfg,
		clock:     o.clock,
		wallClock: o.clock == wall,
		closing:   make(chan struct{}),
		wake:      make(chan struct{}, 1),
	}
	e.env = env{
		c:           c,
		rnd:         o.rnd,
		log:         o.logger,
		debug:       o.logger.Core().Enabled(zapcore.DebugLevel),
		hooks:       o.hooks,
		maxRetrying: int64(*cfg.Engine.MaxRetryingRequests),
		retrying:    &e.retrying,
		budget:      newRetryBudget(cfg.Engine.RetryBudget, o.clock.Now().UnixNano()),
		now:         func() int64 { return o.clock.Now().UnixNano() },
		shards:      e.shards[:],
	}
	e.env.passiveHealth(c)
	if o.health != nil {
		e.health = o.health
	} else {
		hopts := []health.Option{health.WithClock(o.clock), health.WithLogger(o.logger)}
		if f := o.hooks.Ejected; f != nil {
			log := o.logger
			hopts = append(hopts, health.WithOnEject(func(name string, d time.Duration, n int) {
				defer recoverHook(log, name)
				f(name, d, n)
			}))
		}
		if f := o.hooks.Recovered; f != nil {
			log := o.logger
			hopts = append(hopts, health.WithOnRecover(func(name string) {
				defer recoverHook(log, name)
				f(name)
			}))
		}
		if f := o.hooks.Block; f != nil {
			// Shared blocks are told by the actor, once per block created,
			// on its goroutine: a panicking hook must not take it down.
			log := o.logger
			hopts = append(hopts, health.WithOnBlock(func(name string, k health.Kind, d time.Duration) {
				defer func() {
					if r := recover(); r != nil {
						log.Error("reroute block hook panicked", zap.String("id", name), zap.Any("panic", r))
					}
				}()
				f(name, k, d)
			}))
		}
		e.actor = health.New(c, append(hopts, o.healthOpts...)...)
		e.health = actorHealth{e.actor}
		e.env.actor = e.actor
	}
	var src ttfbSource
	if e.actor != nil {
		src = e.actor
	} else if ts, ok := o.health.(ttfbSource); ok {
		src = ts // a WithHealth that keeps times to first token too (the simulator's)
	}
	if !o.noHedge {
		e.env.hedging(c, src, o.clock.Now().UnixNano())
	}
	for i := range e.shards {
		e.shards[i].counts = newCounts(c.NumTargets())
	}
	return e, nil
}

// recoverHook keeps a host's hook that panics on the actor's goroutine
// from taking the actor down.
func recoverHook(log *zap.Logger, id string) {
	if r := recover(); r != nil {
		log.Error("reroute health hook panicked", zap.String("id", id), zap.Any("panic", r))
	}
}

// AttemptTimeout returns the per-attempt timeout of target index t
// (engine.timeouts.attempt, or the provider's override); 0 means none.
func (e *Engine) AttemptTimeout(t int) time.Duration { return e.c.Limits[t].Attempt }

// Compiled returns the compiled configuration: target indices and rules.
func (e *Engine) Compiled() *policy.Compiled { return e.c }

// Config returns the finalized configuration. It must not be modified.
func (e *Engine) Config() *policy.Config { return e.cfg }

// Actor returns the engine's health actor, for listing live blocks and
// waiting for reports to be applied; nil when the engine was built
// WithHealth.
func (e *Engine) Actor() *health.Actor { return e.actor }

// Do runs one request whose primary target is model (a configured target
// id) through attempts, waits and failover, calling call once per attempt
// on the calling goroutine (a hedge's call on another one, beside it: see
// Call). It returns the Result of the attempt that is
// delivered, or an error: an *ExhaustedError when the policy gave up (see
// docs/behaviour.md#the-error-value and WriteHTTP), ctx's error when ctx was cancelled, ErrClosed
// after Close, ErrUnknownModel, or a *PanicError when call panicked.
//
// Every Do ends with exactly one of those. A request's deadline is ctx's:
// no wait starts that would end past it.
func (e *Engine) Do(ctx context.Context, model string, call Call) (Result, error) {
	return e.run(ctx, model, -1, call)
}

// DoTarget is Do for the target of index t in Compiled(), as
// policy.Compiled.Resolve returns it: a caller that has resolved the name
// already spares the engine a second lookup. A t out of range is
// ErrUnknownModel.
func (e *Engine) DoTarget(ctx context.Context, t int, call Call) (Result, error) {
	if t < 0 {
		t = e.c.NumTargets() // out of range, and not "look model up"
	}
	return e.run(ctx, "", t, call)
}

// run is Do and DoTarget: t < 0 means look model up. Both are wrappers
// small enough to be inlined, so neither pays a call more than the other.
func (e *Engine) run(ctx context.Context, model string, t int, call Call) (res Result, err error) {
	if ctx == nil || call == nil {
		return Result{}, errNilArgument
	}
	if t < 0 {
		var ok bool
		if t, ok = e.lookupTarget(model); !ok {
			return Result{}, &unknownModelError{model}
		}
	} else if t >= e.c.NumTargets() {
		return Result{}, &unknownModelError{"#" + strconv.Itoa(t)}
	}
	s := e.pickShard()
	s.begun.Add(1)
	var m Machine
	defer func() {
		if r := recover(); r != nil {
			// A host's hook panicked on this goroutine (a panicking call
			// is recovered in invoke, with its target): the request ends
			// with the panic as its error, like any other request ends
			// with exactly one result.
			res, err = Result{}, &PanicError{Target: e.c.Targets[t], Value: r, Stack: debug.Stack()}
			e.log.Error("reroute hook panicked", zap.String("target", e.c.Targets[t]), zap.Any("panic", r))
		}
		e.end(s, &m)
	}()
	if e.closed.Load() {
		return Result{}, ErrClosed
	}
	m.begin(&e.env, s, t)
	m.ctx = ctx
	if d, ok := ctx.Deadline(); ok {
		if e.wallClock {
			m.deadline = d.UnixNano()
		} else {
			m.deadline = e.clock.Now().UnixNano() + int64(time.Until(d))
		}
	}
	// The loop is drive's, written out: calling drive here cost the
	// success path about 10 % (BenchmarkDoSuccess, 73 → 81 ns; measured
	// again with drive taking the hedge's branch too: 78 → 90 ns).
	st := m.Start()
	for {
		switch st.Kind {
		case StepDone:
			return m.Result(), nil
		case StepFail:
			return Result{}, st.Err
		case StepAbort:
			return Result{}, m.cause
		}
		if st.Wait > 0 {
			if err := e.sleep(ctx, st.Wait); err != nil {
				st = m.Interrupt(err)
				continue
			}
		}
		if err := ctx.Err(); err != nil {
			st = m.Interrupt(err)
			continue
		}
		if m.attempts > 1 && e.closed.Load() {
			st = m.Interrupt(ErrClosed)
			continue
		}
		if m.hedgeIn > 0 {
			var perr error
			if st, perr = e.race(ctx, &m, st, call); perr != nil {
				return Result{}, perr
			}
			continue
		}
		o, _, perr := e.invoke(ctx, m.rules, st.Target, m.attempts, st.Wait, plainAttempt, call)
		if perr != nil {
			return Result{}, perr
		}
		st = settle(ctx, &m, &o)
	}
}

// setDeadline gives m the request's deadline, ctx's.
func (e *Engine) setDeadline(ctx context.Context, m *Machine) {
	if d, ok := ctx.Deadline(); ok {
		if e.wallClock {
			m.deadline = d.UnixNano()
		} else {
			m.deadline = e.clock.Now().UnixNano() + int64(time.Until(d))
		}
	}
}

// drive carries out m's steps from st until the request ends: the waits,
// the attempts, and the context's and Close's interruptions. Every
// decision is m's. run has the same loop written out; a change here is a
// change there.
func (e *Engine) drive(ctx context.Context, m *Machine, st Step, call Call) (Result, error) {
	for {
		switch st.Kind {
		case StepDone:
			return m.Result(), nil
		case StepFail:
			return Result{}, st.Err
		case StepAbort:
			return Result{}, m.cause
		}
		if st.Wait > 0 {
			if err := e.sleep(ctx, st.Wait); err != nil {
				st = m.Interrupt(err)
				continue
			}
		}
		if err := ctx.Err(); err != nil {
			st = m.Interrupt(err)
			continue
		}
		if m.attempts > 1 && e.closed.Load() {
			st = m.Interrupt(ErrClosed)
			continue
		}
		// A continuation is never hedged: its Machine asks for no hedge.
		o, _, perr := e.invoke(ctx, m.rules, st.Target, m.attempts, st.Wait, continuationAttempt, call)
		if perr != nil {
			return Result{}, perr
		}
		st = settle(ctx, m, &o)
	}
}

// settle passes the outcome o of the attempt the last step asked for to
// m: to Cut when the request's context ended the attempt, else to Observe.
func settle(ctx context.Context, m *Machine, o *policy.Outcome) Step {
	if o.Err != nil {
		if err := ctx.Err(); err != nil {
			return m.Cut(o, err)
		}
	}
	return m.Observe(o)
}

func (e *Engine) end(s *shard, m *Machine) {
	m.Finish()
	s.ended.Add(1)
	if e.closed.Load() {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
}

// sleep waits d on the engine's clock, or until ctx is done or the engine
// closes.
func (e *Engine) sleep(ctx context.Context, d time.Duration) error {
	t := e.clock.Timer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-e.closing:
		return ErrClosed
	}
}

var errNilArgument = errors.New("reroute: Do needs a non-nil context and call")

var errNoResponse = errors.New("reroute: call returned neither a status nor an error")

// attemptKind tells invoke what the attempt is, for Attempt's flags.
type attemptKind uint8

const (
	plainAttempt attemptKind = iota
	hedgeAttempt
	continuationAttempt
)

// invoke makes attempt number n, to target t, of a request whose rules
// are rules: the per-attempt timeout, the latency measurement when the call
// does not report one, and panic recovery. It touches no Machine, so that
// a hedge's invoke can run beside its Machine's owner. took is how long
// the call took, measured only for a hedging policy (else 0). kind says
// whether the attempt is a hedge or a continuation.
func (e *Engine) invoke(ctx context.Context, rules *policy.Rules, t, n int, wait time.Duration, kind attemptKind, call Call) (o policy.Outcome, took time.Duration, perr error) {
	a := Attempt{Target: e.c.Targets[t], Model: e.c.Models[t], Index: t, Number: n, Provider: &e.cfg.ModelProviders[t], Wait: wait,
		Hedge: kind == hedgeAttempt, Continuation: kind == continuationAttempt}
	actx := ctx
	var cancel context.CancelFunc
	var t0 time.Time
	if to := e.c.Limits[t].Attempt; to > 0 {
		// WithTimeout would read the clock anyway; reading it here gives a
		// timed-out attempt its elapsed time (its timeout_<ms>ms, docs/behaviour.md#the-error-response)
		// even when neither the call nor on_high_latency measures it.
		t0 = e.clock.Now()
		// A request deadline that comes first makes the attempt's own
		// context (a timer and three allocations) pointless.
		if d, ok := ctx.Deadline(); !ok || !e.wallClock || d.After(t0.Add(to)) {
			actx, cancel = e.clock.WithDeadline(ctx, t0.Add(to))
		}
	}
	measure := rules != nil && (rules.Latency != nil || rules.Hedge != nil)
	if measure && t0.IsZero() {
		t0 = e.clock.Now()
	}
	defer func() {
		if cancel != nil {
			cancel()
		}
		if r := recover(); r != nil {
			perr = &PanicError{Target: a.Target, Value: r, Stack: debug.Stack()}
			if e.log != nil {
				e.log.Error("reroute call panicked", zap.String("target", a.Target), zap.Any("panic", r))
			}
		}
	}()
	o = call(actx, a)
	if o.Status == 0 && o.Err == nil {
		o.Err = errNoResponse
		if err := actx.Err(); err != nil {
			o.Err = err
		}
	}
	if (measure || o.Err != nil) && !t0.IsZero() {
		took = e.clock.Since(t0)
		if o.TTFB == 0 && o.Total == 0 {
			o.TTFB, o.Total = took, took
		}
		if rules == nil || rules.Hedge == nil {
			took = 0
		}
	}
	return o, took, nil
}

type requestIDKey struct{}

// WithRequestID returns a context that carries a request id; the engine
// adds it to every log line of a request Do runs with that context.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id WithRequestID put in ctx, or "". A nil
// ctx has none.
func RequestID(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// Close stops the engine: later calls of Do fail with ErrClosed, waits in
// progress are interrupted (their Do returns ErrClosed), and no in-flight
// request starts another attempt. Attempts already running are not cut.
// Close returns when every Do has returned and the health actor has ended.
// It is idempotent and safe for concurrent use.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.closed.Store(true)
		close(e.closing)
	})
	for e.inflight() > 0 {
		<-e.wake
	}
	// Pass the nudge on, in case Close is waiting in another goroutine too.
	select {
	case e.wake <- struct{}{}:
	default:
	}
	if e.actor != nil {
		e.actor.Stop()
	}
	return nil
}

func (e *Engine) String() string {
	return fmt.Sprintf("reroute.Engine(%d targets)", e.c.NumTargets())
}
