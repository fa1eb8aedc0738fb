package engine

import (
	"context"
	"errors"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/reroute-go/reroute/policy"
)

// Hedging (docs/behaviour.md#hedging). The Machine decides everything: the
// delay of a hedge (HedgeAfter), whether one starts and where (Hedge), and
// what the two outcomes mean (Failed, Abandon, then Observe or Cut). The
// driver here, Engine.race, only runs the two calls and says which
// returned first.

// hedgeBudget is the hedge budget of one policy: the hedges started over
// HedgeBudgetWindow may be at most budget_percent of the requests of the
// policy begun in it, plus budget_min_per_second for each of its seconds.
// It is the retry budget's sliding window with its own request count,
// since a policy's requests are a share of the engine's.
type hedgeBudget struct {
	begun atomic.Int64 // requests of the policy begun
	_     [56]byte     // begun is written by every such request; keep it off b's line
	b     *retryBudget
}

func newHedgeBudget(h *policy.HedgeRule, now int64) *hedgeBudget {
	secs := int64(policy.HedgeBudgetWindow / time.Second)
	return &hedgeBudget{b: &retryBudget{
		enabled: true,
		percent: h.BudgetShare,
		floor:   h.BudgetMinPerSecond * float64(secs),
		seconds: secs,
		window:  int64(policy.HedgeBudgetWindow),
		retries: make([]budgetBucket, secs),
		marks:   make([]budgetMark, secs+1),
		origin:  budgetMark{at: now, set: true},
	}}
}

// ttfbSource is where the percentile of a target's time to first token
// comes from and goes to: the health actor (health/ttfb.go).
type ttfbSource interface {
	ReportTTFB(t int, d time.Duration) bool
	TTFB(t, k int) (time.Duration, bool)
}

// hedging fills the env's hedge budgets (one per policy that hedges) and
// its source of percentiles.
func (v *env) hedging(c *policy.Compiled, src ttfbSource, now int64) {
	for t, r := range c.Rules {
		if r == nil || r.Hedge == nil {
			continue
		}
		if v.hedges == nil {
			v.hedges = make([]*hedgeBudget, c.NumTargets())
		}
		v.hedges[t] = newHedgeBudget(r.Hedge, now)
	}
	if len(c.TTFBPercentiles) > 0 {
		v.ttfb = src
	}
}

// hedgeDelay is the delay of a hedge of the attempt to t about to start
// after wait, or 0 when the attempt gets none: its delay would end at or
// past the request's deadline.
func (m *Machine) hedgeDelay(t int, wait time.Duration) time.Duration {
	h := m.rules.Hedge
	var p time.Duration
	var ok bool
	if h.Percentile > 0 && m.env.ttfb != nil {
		p, ok = m.env.ttfb.TTFB(t, h.PercentileIndex)
	}
	d := h.DelayFor(p, ok)
	if m.deadline != 0 && m.now()+int64(wait+d) >= m.deadline {
		return 0
	}
	return d
}

// HedgeAfter returns, after a StepAttempt, how long after the attempt
// starts the driver asks Hedge for a second attempt beside it, if the
// first has not returned by then; 0: no hedge.
func (m *Machine) HedgeAfter() time.Duration { return m.hedgeIn }

// Hedge decides, when the delay of HedgeAfter has passed and the attempt
// has not returned, whether a hedge starts beside it. It answers a
// StepAttempt to make at once, on its own goroutine, with the request's
// next attempt number, or a Step of Kind 0: no hedge. A request has at most
// one hedge. The hedge goes where a failover would, by the policy's
// default_strategy (blocks, ejections and the targets tried are honoured);
// none starts when the attempts, the hedge included, would pass
// default_max_attempts, when the deadline or the time budget has passed,
// when the attempt in flight is the probe of a half-open target, or when
// the policy's hedge budget refuses.
//
// Hedge may be called on another goroutine than the Machine's owner, but
// never concurrently with another method: the driver's owner is inside the
// attempt's Call meanwhile and synchronises with the caller before it
// touches the Machine again.
func (m *Machine) Hedge() Step {
	if m.hedged || m.rules == nil || m.rules.Hedge == nil || m.hedgeNum != 0 || m.env.hedges == nil {
		return Step{}
	}
	delay := m.hedgeIn            // the delay waited, for the event
	m.hedged, m.hedgeIn = true, 0 // whatever is decided now: the moment has passed
	if !m.virtual {
		m.haveNow = false
	}
	def := m.rules.Default
	if def.Strategy == policy.SameModel || m.attempts+1 > max(def.MaxAttempts, 1) || m.probeID != 0 {
		return Step{}
	}
	now := m.now()
	if m.deadline != 0 && now >= m.deadline {
		return Step{}
	}
	if d := m.rules.MaxRetryDuration; d > 0 && m.retryStarted && now-m.retryStart >= int64(d) {
		return Step{}
	}
	m.step()
	m.newDecision()
	noSame, same := m.noSame, m.sameRetries
	m.sameRetries = 0 // a hedge goes elsewhere: the attempt in flight is still running
	t, wait, pos, _ := m.choose(def.Strategy, m.current)
	m.noSame, m.sameRetries = noSame, same
	if t < 0 || wait > 0 || t == m.current {
		m.releaseProbe()
		return Step{}
	}
	if b := m.env.hedges[m.primary]; b != nil && !b.b.allow(now, b.begun.Load()) {
		m.releaseProbe()
		if m.env.debug {
			m.logDebug("reroute hedge refused by its budget", zap.String("target", m.name(m.current)))
		}
		return Step{}
	}
	m.attempts++
	m.hedgeNum, m.hedgeTarget = int32(m.attempts), int32(t)
	m.markTried(t)
	if t != m.primary {
		m.moved = true
	}
	if m.env.hooks.Hedge != nil {
		m.env.hooks.Hedge(HedgeEvent{From: m.name(m.current), To: m.name(t), FromIndex: m.current, ToIndex: t, Number: m.attempts, Delay: delay})
	}
	if m.env.debug {
		m.logDebug("reroute hedge started", zap.String("from", m.name(m.current)), zap.String("to", m.name(t)), zap.Int("attempt", m.attempts), zap.Int("fallback_position", pos))
	}
	return Step{Kind: StepAttempt, Target: t}
}

// HedgeTarget returns the target of the hedge in flight, or -1.
func (m *Machine) HedgeTarget() int {
	if m.hedgeNum == 0 {
		return -1
	}
	return int(m.hedgeTarget)
}

// Deliverable reports whether o, the outcome of an attempt of m's request,
// would be delivered rather than retried: the test of which of two racing
// calls wins. It reads only the policy, which never changes, so it is
// safe to call on any goroutine.
func (m *Machine) Deliverable(o *policy.Outcome) bool { return deliverable(m.rules, o) }

func deliverable(rules *policy.Rules, o *policy.Outcome) bool {
	c, _, _ := rules.Classify(o)
	return !c.Retriable()
}

// Failed takes the failed outcome of one of two attempts in flight, the
// hedge's (hedge true) or the attempt it hedges: the failure is recorded as
// any other (counted, its Retry-After honoured, reported to passive
// health, listed if the request is exhausted), but decides nothing: the
// other attempt goes on, and its outcome, passed to Observe (or Cut),
// decides the next step. When the attempt hedged fails, the hedge becomes
// the request's current attempt whatever the failure's strategy.
func (m *Machine) Failed(o *policy.Outcome, hedge bool) {
	if !m.virtual {
		m.haveNow = false
	}
	t, n := m.current, int(m.curNum)
	if hedge {
		t, n = int(m.hedgeTarget), int(m.hedgeNum)
	}
	class := m.seen(t, n, o)
	if !class.Retriable() {
		// A deliverable answer that came second: the other won.
		m.abandoned(t, o)
	} else {
		_, key := m.failure(t, n, o, class)
		m.count(key)
		m.flushFailure() // the next attempt is another target's
	}
	m.took = 0
	m.promote(hedge)
}

// Abandon takes the outcome of the attempt that lost the race, the hedge's
// (hedge true) or the attempt it hedged, which the driver cancelled: it is
// neither a success nor a failure of its target (passive health does not
// hear of it, Counts do not count it). Its elapsed time (o.Total) is a
// lower bound on its latency: over on_high_latency's threshold it is a
// latency event, and with delay_percentile it is a sample of the target's
// time to first token. Call it before the winner's Observe.
func (m *Machine) Abandon(o *policy.Outcome, hedge bool) {
	if !m.virtual {
		m.haveNow = false
	}
	t, n := m.current, int(m.curNum)
	if hedge {
		t, n = int(m.hedgeTarget), int(m.hedgeNum)
	}
	if m.env.hooks.Attempt != nil {
		m.env.hooks.Attempt(AttemptEvent{Target: m.name(t), Index: t, Number: n, Class: policy.Timeout, TTFB: o.TTFB, Total: o.Total, Err: o.Err, Abandoned: true})
	}
	m.abandoned(t, o)
	m.promote(hedge)
}

func (m *Machine) abandoned(t int, o *policy.Outcome) {
	if m.probeID != 0 && int(m.probeTarget) == t {
		m.releaseProbe() // the probe told nothing
	}
	if l := m.rules.Latency; l != nil && o.Total > l.Threshold {
		m.latencyEvent(t, o.Total, true)
	}
	if o.Total > 0 && m.rules.Hedge.Percentile > 0 {
		m.sampleTTFB(t, o.Total)
	}
}

// promote ends the race: when the attempt hedged is out (hedge false), the
// hedge becomes the current attempt.
func (m *Machine) promote(hedge bool) {
	if !hedge {
		if int(m.hedgeTarget) != m.current {
			m.curFails = 0
		}
		m.current, m.curNum = int(m.hedgeTarget), m.hedgeNum
	}
	m.hedgeNum = 0
}

// SetTook tells m how long the Call of the attempt about to be observed
// took: with delay_percentile, a sample of its target's time to first
// token (a Call returns at a stream's first event or when a body is
// read). The simulator passes virtual time; Do measures it.
func (m *Machine) SetTook(d time.Duration) { m.took = d }

func (m *Machine) sampleTTFB(t int, d time.Duration) {
	m.took = 0
	if m.env.ttfb != nil && m.rules.Hedge != nil && m.rules.Hedge.Percentile > 0 {
		m.env.ttfb.ReportTTFB(t, d)
	}
}

// race is one attempt with its hedge armed: the driver's side.
// Races are pooled, the Machine inside: a request of a hedging policy
// allocates the race's channel and no more of it (measured:
// BenchmarkDoHedged/armed). The channel is made per race: a channel made
// in one testing/synctest bubble cannot be used in another. A race goes
// back to the pool only when the timer's goroutine is done with it: its
// timer stopped before firing, or its last act, the send on result,
// received.
type race struct {
	mu      sync.Mutex
	m       Machine
	done    bool // the attempt hedged has returned: no hedge may start
	started bool
	perr    error // a hook that panicked while the hedge was decided
	hcancel context.CancelCauseFunc
	pcancel context.CancelCauseFunc
	won     atomic.Int32 // 0 none yet, 1 the attempt hedged, 2 the hedge
	// result carries the hedge's outcome, or, when the timer fired and
	// no hedge started, an empty hedgeResult: the goroutine is done.
	result chan hedgeResult

	// What the timer's goroutine runs with; fire is r.fire, made once.
	e    *Engine
	ctx  context.Context
	call Call
	fire func()
}

var races = sync.Pool{New: func() any {
	r := &race{}
	r.fire = func() { r.e.hedge(r.ctx, r, r.call) }
	return r
}}

// reset readies a pooled race for the next request, dropping what the
// last one held.
func (r *race) reset() {
	r.m = Machine{}
	r.done, r.started, r.perr, r.hcancel, r.pcancel = false, false, nil, nil, nil
	r.won.Store(0)
	r.e, r.ctx, r.call, r.result = nil, nil, nil, nil
}

type hedgeResult struct {
	o    policy.Outcome
	took time.Duration
	perr error
	lost bool // it returned because it had lost
}

// race runs the attempt st with its hedge armed after HedgeAfter: the call
// on this goroutine as any attempt's, and, if the delay passes first and
// the Machine decides a hedge, the hedge's call on the timer's goroutine.
// The first deliverable outcome wins; the loser's context is cancelled
// with ErrAbandoned and race waits for it, so that no call outlives it.
// It returns the Machine's next step, or a call's panic.
func (e *Engine) race(ctx context.Context, sm *Machine, st Step, call Call) (Step, error) {
	// The Machine moves to the heap for the race, since the timer's
	// goroutine needs it: Do's own stays on its stack, so that requests
	// that never hedge allocate nothing for it. A Machine holds no
	// pointer into itself, so a copy is the same Machine.
	r := races.Get().(*race)
	m := &r.m
	*m = *sm
	defer func() {
		*sm = *m
		r.reset()
		races.Put(r)
	}()
	pctx, pcancel := context.WithCancelCause(ctx)
	defer pcancel(nil)
	r.pcancel, r.e, r.ctx, r.call, r.result = pcancel, e, ctx, call, make(chan hedgeResult, 1)
	rules, n := m.rules, m.attempts
	timer := e.clock.AfterFunc(m.hedgeIn, r.fire)
	o, took, perr := e.invoke(pctx, rules, st.Target, n, st.Wait, plainAttempt, call)
	started := r.stop(timer)
	if r.perr != nil {
		perr = r.perr
	}
	if !started {
		if perr != nil {
			return Step{}, perr
		}
		if o.Err != nil {
			if err := ctx.Err(); err != nil {
				return m.Cut(&o, err), nil
			}
		}
		m.took = took
		return m.Observe(&o), nil
	}
	defer r.hcancel(nil)
	if perr != nil {
		r.hcancel(ErrAbandoned)
		<-r.result
		return Step{}, perr
	}
	// The hedge won while this call ran: this one was cancelled (or
	// answered too late). A deliverable answer whose claim fails lost the
	// same way: the hedge claimed the win between the load and the claim.
	deliverable := ctx.Err() == nil && m.Deliverable(&o)
	if r.won.Load() == 2 || deliverable && !r.won.CompareAndSwap(0, 1) {
		h := <-r.result
		m.Abandon(&o, false)
		m.took = h.took
		return m.Observe(&h.o), nil
	}
	if deliverable {
		r.hcancel(ErrAbandoned)
		h := <-r.result
		if h.perr != nil {
			return Step{}, h.perr
		}
		if h.lost {
			m.Abandon(&h.o, true)
		} else {
			m.Failed(&h.o, true)
		}
		m.took = took
		return m.Observe(&o), nil
	}
	if err := ctx.Err(); err != nil && o.Err != nil {
		// The request's context ended: both calls return with it.
		h := <-r.result
		if h.perr != nil {
			return Step{}, h.perr
		}
		m.Abandon(&h.o, true)
		return m.Cut(&o, err), nil
	}
	// This attempt failed. If the hedge has failed already, this failure,
	// the later one, decides the next step, as it would without a hedge
	// (the simulator orders them by time the same way).
	select {
	case h := <-r.result:
		if h.perr != nil {
			return Step{}, h.perr
		}
		m.Failed(&h.o, true)
		m.took = took
		return m.Observe(&o), nil
	default:
	}
	// The hedge goes on as the request's attempt. Failed tells the hooks
	// while the hedge's call still runs: if a hook panics, the race must
	// still wait for the call before the panic leaves it.
	running := true
	defer func() {
		if running {
			r.hcancel(ErrAbandoned)
			<-r.result
		}
	}()
	m.Failed(&o, false)
	h := <-r.result
	running = false
	if h.perr != nil {
		return Step{}, h.perr
	}
	if h.o.Err != nil {
		if err := ctx.Err(); err != nil {
			return m.Cut(&h.o, err), nil
		}
	}
	m.took = h.took
	return m.Observe(&h.o), nil
}

// stop ends the hedge's chance to start and reports whether it started.
// A timer that has fired already has its goroutine in hedge, or about to
// be: stop waits for it to finish there, so that none outlives Do.
func (r *race) stop(t interface{ Stop() bool }) bool {
	fired := !t.Stop()
	r.mu.Lock()
	r.done = true
	started := r.started
	r.mu.Unlock()
	if fired && !started {
		<-r.result
	}
	return started
}

// hedge runs on the timer's goroutine when the hedge delay has passed: it
// asks the Machine for a hedge and, if one starts, makes its call here
// and hands the outcome to race.
func (e *Engine) hedge(ctx context.Context, r *race, call Call) {
	r.mu.Lock()
	if r.done || ctx.Err() != nil || e.closed.Load() {
		r.mu.Unlock()
		r.result <- hedgeResult{}
		return
	}
	st, perr := hedgeStep(&r.m)
	if perr != nil {
		r.perr = perr
		r.pcancel(ErrAbandoned)
	}
	if st.Kind != StepAttempt {
		r.mu.Unlock()
		r.result <- hedgeResult{}
		return
	}
	hctx, hcancel := context.WithCancelCause(ctx)
	r.started, r.hcancel = true, hcancel
	rules, n := r.m.rules, r.m.attempts
	r.mu.Unlock()

	o, took, perr := e.invoke(hctx, rules, st.Target, n, 0, hedgeAttempt, call)
	res := hedgeResult{o: o, took: took, perr: perr}
	switch {
	case perr != nil:
		r.pcancel(ErrAbandoned) // end the race: race returns the panic
	case ctx.Err() == nil && hctx.Err() == nil && deliverable(rules, &o) && r.won.CompareAndSwap(0, 2):
		r.pcancel(ErrAbandoned)
	default:
		res.lost = r.won.Load() == 1 || errors.Is(context.Cause(hctx), ErrAbandoned)
	}
	r.result <- res
}

// hedgeStep asks m for a hedge, recovering a host's hook that panics on
// this goroutine, where Do's recovery cannot see it.
func hedgeStep(m *Machine) (st Step, perr error) {
	defer func() {
		if v := recover(); v != nil {
			st, perr = Step{}, &PanicError{Target: m.name(m.current), Value: v, Stack: debug.Stack()}
		}
	}()
	return m.Hedge(), nil
}
