package engine

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

// StepKind says what a Machine wants done next.
type StepKind uint8

// The step kinds.
const (
	// StepAttempt: wait Step.Wait, then make an attempt to Step.Target and
	// pass its outcome to Observe (or, if the request's context cut it, to
	// Cut; if the attempt cannot be made, call Interrupt instead).
	StepAttempt StepKind = iota + 1
	// StepDone: deliver Machine.Result.
	StepDone
	// StepFail: the request is exhausted; Step.Err says why.
	StepFail
	// StepAbort: the request was ended from outside (its context was
	// cancelled, or the engine closed); Machine.Cause is the error to
	// return.
	StepAbort
)

// Step is a Machine's decision.
type Step struct {
	Kind   StepKind
	Target int           // target index, for StepAttempt
	Wait   time.Duration // for StepAttempt
	Err    *ExhaustedError
	// Four words: a Step is returned in registers. A fifth field (the
	// hedge delay was one) makes the compiler return it through memory,
	// which cost every request about 15 ns; Machine.HedgeAfter has it.
}

// Machine is one request's decisions: which target to attempt, how long
// to wait first, and when to give up. It is a step function, fed the
// outcome of each attempt and answering with the next step; it never
// waits and does no I/O of its own. Do drives one on the caller's
// goroutine; the simulator drives many in virtual time; tests drive one
// directly (see machine_test.go). Every per-request decision is made here
// and nowhere else: the driver only carries steps out.
//
// A Machine is not pure: its decisions have the engine-wide effects listed
// on env (health reports, counts, the max_retrying_requests slot, the
// retry budget, hooks and debug logs), and it reads the shared health
// state once per decision. Its time is the engine's clock, read at most
// once per decision, or virtual time set with SetNow.
//
// A Machine is owned by one goroutine. Its zero value is unusable: start it
// with Engine.Begin (or, inside Do, begin). The behaviour it implements is
// described in docs/behaviour.md.
type Machine struct {
	env      *env
	shard    *shard
	rules    *policy.Rules
	primary  int
	current  int
	deadline int64 // unix ns; 0 = none
	attempts int
	// Hedging (hedge.go): hedgeIn is the hedge delay of the attempt last
	// decided (HedgeAfter); took is how long the Call about to be
	// observed took, set by the driver of a hedging policy: the sample of
	// its target's time to first token; hedgeNum is the number of the
	// hedge in flight (0: none), to hedgeTarget; hedged says the request
	// has had its hedge (at most one). int32s and bools packed together:
	// the Machine is zeroed on every request.
	hedgeIn     time.Duration
	took        time.Duration
	curNum      int32 // the number of the attempt to current
	hedgeNum    int32
	hedgeTarget int32
	moved       bool // an attempt has gone to a target other than the primary
	noSame      bool // the last failure forbids another attempt to the same target
	hedged      bool
	// sameRetries is what same_model_retries allows the last failure
	// (Rules.SameRetries: its status entry's, on_timeout's, or the policy's)
	sameRetries int
	curFails    int // failures of the current target in a row
	prevWait    time.Duration

	// retryStart is when the first attempt failed: max_retry_duration_ms
	// counts from there. retryStarted says it is set (virtual time may
	// start at 0).
	retryStart   int64
	retryStarted bool
	retrying     bool // holds a max_retrying_requests slot
	begun        bool // begun by Begin: Finish counts its end

	// providers a failure said not to retry (x-should-retry: false); rare,
	// so a slice allocated only then
	noProviders []int

	// The targets attempted (or skipped as blocked before the first
	// attempt). A request attempts a handful, so a short list beats a
	// bitset sized by the configuration.
	tried  [6]int32
	ntried int
	more   []int32

	keys  [6]keyCount
	nkeys int32
	keys2 []keyCount

	failed  [2]FailedAttempt
	nfailed int
	failed2 []FailedAttempt

	maxRA    time.Duration
	shortest time.Duration
	facts    facts // this request's own health facts
	view     view  // the shared state, read once per decision

	// Passive health. probeID is 1 + the identifier whose probe claim
	// this request holds (0: none), until probeUntil, for the attempt to
	// probeTarget.
	probeID     int32
	probeTarget int32
	probeUntil  int64
	// heldID is 1 + the identifier of a failure passive holds back while
	// the request retries the same target (0: none), stamped heldAt.
	heldID int32
	heldAt int64
	// lastResort is 1 + the most promising ejected candidate of the
	// current decision (the one whose ejection ends first), 0 none: a
	// request whose every candidate is ejected still tries it. It and
	// claimsLost are reset where a decision that can choose begins
	// (newDecision).
	lastResort      int32
	lastResortUntil int64
	// claimsLost are the half-open candidates of this decision whose probe
	// another request holds.
	claimsLost  [2]int32
	nclaimsLost int32
	// ejected lists the targets skipped as ejected, for the exhaustion.
	ejected  [2]int32
	nejected int32
	ejected2 []int32

	last      policy.Outcome
	lastClass policy.Class

	// cont is a continuation's state (resume); nil for an ordinary
	// request, so that they pay one word for it.
	cont *resumed

	virtual bool
	nowNs   int64
	haveNow bool

	ctx   context.Context // the request's, for its request id in logs; nil in simulation
	cause error           // why the request was aborted, after StepAbort
}

// Cause returns the error that aborted the request, after StepAbort: the
// context's error, or ErrClosed.
func (m *Machine) Cause() error { return m.cause }

// keyCount is a failure counter of the request. int32s: a key is a status
// code or a negative constant, and a Machine is zeroed on every request,
// so its size is paid on the success path.
type keyCount struct {
	key int32
	n   int32
}

// Begin prepares m for a request whose primary is model, for a driver
// other than Do (the simulator). The order of calls is SetNow (virtual time
// only), Begin, SetDeadline, then Start and Observe (or Cut, or Interrupt)
// until a StepDone, StepFail or StepAbort, then Finish.
func (e *Engine) Begin(m *Machine, model string) error {
	s := &e.shards[0]
	if !m.virtual {
		s = e.pickShard()
	}
	virtual, now := m.virtual, m.nowNs
	*m = Machine{virtual: virtual, nowNs: now, haveNow: virtual}
	t, ok := e.lookupTarget(model)
	if !ok {
		return &unknownModelError{model}
	}
	s.begun.Add(1)
	m.begun = true
	m.begin(&e.env, s, t)
	return nil
}

// begin prepares a zeroed m for a request whose primary is target t, which
// must be in range.
func (m *Machine) begin(v *env, s *shard, t int) {
	m.env, m.rules, m.primary, m.current, m.shard = v, v.c.Rules[t], t, t, s
}

// lookupTarget finds a target's index. With a handful of targets comparing
// the strings beats hashing one.
func (e *Engine) lookupTarget(model string) (int, bool) {
	if ts := e.c.Targets; len(ts) <= 8 {
		for i, t := range ts {
			if t == model {
				return i, true
			}
		}
		return 0, false
	}
	return e.c.Lookup(model)
}

// SetNow puts m in virtual time: from now on it reads time only from
// SetNow. Call it before Begin and before every Start, Observe, Cut or
// Interrupt.
func (m *Machine) SetNow(now int64) { m.virtual, m.nowNs, m.haveNow = true, now, true }

// SetDeadline sets the request's deadline in unix nanoseconds (0: none).
func (m *Machine) SetDeadline(d int64) { m.deadline = d }

// Attempts returns the number of attempts decided so far.
func (m *Machine) Attempts() int { return m.attempts }

func (m *Machine) now() int64 {
	if !m.haveNow {
		m.nowNs, m.haveNow = m.env.now(), true
	}
	return m.nowNs
}

// step starts a decision: it takes the decision's one view of the shared
// state, and a real-time machine reads the clock at most once per
// decision, and only if the decision needs it.
func (m *Machine) step() {
	if a := m.env.actor; a != nil {
		m.view = view{snap: a.Snapshot()}
	} else {
		m.view = view{other: m.env.health.View()}
	}
	if !m.virtual {
		m.haveNow = false
	}
}

// newDecision clears what one choosing decision notes about its
// candidates.
func (m *Machine) newDecision() { m.lastResort, m.nclaimsLost = 0, 0 }

// logDebug logs a request-path event with the request's id. Callers check
// m.env.debug first, so that a disabled level costs a bool test.
func (m *Machine) logDebug(msg string, fields ...zap.Field) {
	if id := RequestID(m.ctx); id != "" {
		fields = append(fields, zap.String("request_id", id))
	}
	m.env.log.Debug(msg, fields...)
}

func (m *Machine) name(t int) string { return m.env.c.Targets[t] }

func (m *Machine) isTried(t int) bool {
	for i := 0; i < m.ntried && i < len(m.tried); i++ {
		if int(m.tried[i]) == t {
			return true
		}
	}
	for _, x := range m.more {
		if int(x) == t {
			return true
		}
	}
	return false
}

func (m *Machine) markTried(t int) {
	if m.isTried(t) {
		return
	}
	if m.ntried < len(m.tried) {
		m.tried[m.ntried] = int32(t)
	} else {
		m.more = append(m.more, int32(t))
	}
	m.ntried++
}

// lookup combines the decision's view of the shared state with this
// request's own facts.
func (m *Machine) lookup(t int) health.Status {
	var st health.Status
	if !m.view.Clear(t) {
		st = m.view.Lookup(t, m.now())
	}
	if m.facts.n > 0 {
		ls := m.facts.lookup(t, m.env.c.ProviderID(t), m.now())
		if ls.Until > st.Until {
			st.Until, st.Kind = ls.Until, ls.Kind
		}
		st.Latency = st.Latency || ls.Latency
	}
	return st
}

func (m *Machine) blocked(st health.Status) bool {
	return st.Until != 0 && st.Blocked(m.now())
}

// avail says whether a candidate can be attempted now.
type avail uint8

const (
	availYes     avail = iota
	availBlocked       // a Retry-After or latency block: skip it
	availEjected       // ejected by passive health: skip it, but keep it as a last resort
	availProbe         // half-open: usable as its one probe, if this request wins the claim
)

// availability combines lookup with passive health.
func (m *Machine) availability(t int) (avail, health.Status) {
	st := m.lookup(t)
	switch {
	case m.blocked(st):
		return availBlocked, st
	case !st.Ejected:
		return availYes, st
	case st.EjectedUntil > m.now() || m.claimLost(t):
		return availEjected, st
	}
	return availProbe, st
}

// take decides to use candidate t of availability a: a half-open one only
// if this request wins its probe claim. It reports whether t may be used;
// a candidate it refuses is noted as ejected.
func (m *Machine) take(t int, a avail, st health.Status) bool {
	switch a {
	case availYes:
		return true
	case availProbe:
		now := m.now()
		until := now + int64(m.env.claimFor[t])
		if m.view.Claim(st.EjectedID, now, until) {
			m.releaseProbe() // one claim at a time
			m.probeID, m.probeUntil, m.probeTarget = int32(st.EjectedID+1), until, int32(t)
			if m.env.hooks.Probe != nil {
				m.env.hooks.Probe(m.name(t))
			}
			if m.env.debug {
				m.logDebug("reroute probe of an ejected target", zap.String("target", m.name(t)))
			}
			return true
		}
		if int(m.nclaimsLost) < len(m.claimsLost) {
			m.claimsLost[m.nclaimsLost] = int32(t)
			m.nclaimsLost++
		}
	}
	m.noteEjected(t, st)
	return false
}

func (m *Machine) claimLost(t int) bool {
	for i := range int(m.nclaimsLost) {
		if int(m.claimsLost[i]) == t {
			return true
		}
	}
	return false
}

// noteEjected records a candidate skipped as ejected: for the exhaustion,
// and as the decision's last resort if its ejection ends first.
func (m *Machine) noteEjected(t int, st health.Status) {
	if m.lastResort == 0 || st.EjectedUntil < m.lastResortUntil {
		m.lastResort, m.lastResortUntil = int32(t+1), st.EjectedUntil
	}
	for i := 0; i < int(m.nejected) && i < len(m.ejected); i++ {
		if int(m.ejected[i]) == t {
			return
		}
	}
	for _, x := range m.ejected2 {
		if int(x) == t {
			return
		}
	}
	if int(m.nejected) < len(m.ejected) {
		m.ejected[m.nejected] = int32(t)
	} else {
		m.ejected2 = append(m.ejected2, int32(t))
	}
	m.nejected++
	if m.env.debug {
		m.logDebug("reroute candidate skipped as ejected", zap.String("target", m.name(t)), zap.Duration("remaining", time.Duration(max(st.EjectedUntil-m.now(), 0))))
	}
}

// releaseProbe gives up a probe claim this request holds but will not use.
func (m *Machine) releaseProbe() {
	if m.probeID != 0 {
		m.view.Release(int(m.probeID-1), m.probeUntil)
		m.probeID = 0
	}
}

// passive reports the outcome of the attempt to target t to passive
// health: every failure that counts (a 5xx, a timeout or transport error,
// a 429 without a usable hint); a success only when the target is suspect
// (a streak to reset, an ejection to end, or failures reported and not yet
// applied) or this attempt was its probe, so that a healthy success sends
// nothing.
func (m *Machine) passive(t int, o *policy.Outcome, failure bool) {
	id := m.env.ejID[t]
	probe := m.probeID != 0 && int(m.probeTarget) == t
	if probe {
		m.probeID = 0 // the outcome decides; the claim is spent
	}
	if id < 0 {
		return
	}
	if failure {
		// Held back while the request retries the same target: if that
		// retry succeeds, the pair nets to the success alone (the streak
		// is reset either way), and a target that fails once per request
		// costs no report at all. Any other next step reports it at once.
		m.flushFailure()
		m.heldID, m.heldAt = id+1, m.now()
		return
	}
	if m.heldID == id+1 {
		m.heldID = 0 // this success comes after it, and resets the streak anyway
	}
	if probe || m.view.Attention(int(id)) {
		m.env.health.ReportSuccess(int(id), m.now())
	}
}

// delivered tells passive health about the answer of target t that the
// request delivers as it is: a failure (a pass-through 5xx, 429 without a
// hint, transport error) or a success.
func (m *Machine) delivered(t int, o *policy.Outcome) {
	hinted := o.Status == 429 && o.Err == nil &&
		policy.ParseRetryAfter(429, o.Header, time.Unix(0, m.now()), time.Hour).Wait > 0
	m.passive(t, o, countsAsFailure(o, hinted))
}

// flushFailure reports the failure passive held back, if any.
func (m *Machine) flushFailure() {
	if m.heldID != 0 {
		m.env.health.ReportFailure(int(m.heldID-1), m.heldAt)
		m.heldID = 0
	}
}

// countsAsFailure says whether an outcome is a failure of its target for
// passive health: a 5xx, a timeout or transport error, a 429 without a
// usable retry hint. A latency failure (an attempt abandoned as slow) is
// the latency rule's business, and any other answer, a 4xx included,
// shows the target works.
func countsAsFailure(o *policy.Outcome, hinted bool) bool {
	switch {
	case o.Err != nil:
		return !errors.Is(o.Err, policy.ErrHighLatency)
	case o.Status >= 500:
		return true
	case o.Status == 429:
		return !hinted
	}
	return false
}

// Start decides the first step: the block check before the first attempt.
// A blocked primary is treated as if it had just failed with the policy's
// default strategy.
func (m *Machine) Start() Step {
	m.step()
	if m.rules != nil && m.rules.Hedge != nil && m.env.hedges != nil {
		m.env.hedges[m.primary].begun.Add(1) // what the hedge budget's share is of
	}
	if m.rules != nil && (!m.view.Clear(m.primary) || m.facts.n > 0) {
		// Clear is the fast path: nothing has ever blocked, ejected or
		// suspected the primary, so it is available without a clock read.
		m.newDecision()
		switch a, st := m.availability(m.primary); a {
		case availBlocked:
			m.skip(m.primary, st)
			m.markTried(m.primary)
			return m.next(m.rules.Default, m.primary)
		case availEjected, availProbe:
			if !m.take(m.primary, a, st) {
				// The primary's last-resort standing survives markTried:
				// choose falls back on it when nothing else is left.
				m.markTried(m.primary)
				return m.next(m.rules.Default, m.primary)
			}
		}
	}
	return m.attempt(m.primary, 0, -1)
}

func (m *Machine) attempt(t int, wait time.Duration, fallbackPos int) Step {
	if m.cont != nil {
		m.continued(t, wait, fallbackPos)
	} else if m.attempts > 0 {
		if m.env.hooks.Retry != nil {
			m.env.hooks.Retry(RetryEvent{From: m.name(m.current), To: m.name(t), FromIndex: m.current, ToIndex: t, Number: m.attempts + 1, Wait: wait, Fallback: fallbackPos})
		}
		if m.env.debug {
			m.logDebug("reroute retry started", zap.String("from", m.name(m.current)), zap.String("to", m.name(t)), zap.Int("attempt", m.attempts+1), zap.Duration("wait", wait), zap.Int("fallback_position", fallbackPos))
		}
	}
	m.attempts++
	if t != m.current {
		m.curFails = 0
	}
	m.current, m.curNum = t, int32(m.attempts)
	m.markTried(t)
	if t != m.primary {
		m.moved = true
	}
	// The attempt is counted when it ends, as a success or a failure:
	// attempts are their sum, which spares every request an atomic add.
	if m.rules != nil && m.rules.Hedge != nil && !m.hedged && m.env.hedges != nil && m.cont == nil {
		m.hedgeIn = m.hedgeDelay(t, wait)
	}
	return Step{Kind: StepAttempt, Target: t, Wait: wait}
}

// Observe takes the outcome of the attempt the last step asked for and
// decides the next step.
func (m *Machine) Observe(o *policy.Outcome) Step {
	// The view is taken only on the failure path, which decides: a
	// delivered answer needs none (Attention reads the actor's live words
	// through the view of the decision that chose the target).
	if !m.virtual {
		m.haveNow = false
	}
	t := m.current
	class, event, measured := m.rules.Classify(o)
	m.last, m.lastClass = *o, class
	if m.env.hooks.Attempt != nil || m.env.hooks.Latency != nil || event {
		m.tell(t, int(m.curNum), o, class, event, measured)
	}
	if !class.Retriable() {
		if m.cont != nil && class == policy.PassThrough {
			return m.unrelayable(t, o, class)
		}
		// Passive health hears of a delivered answer only when it
		// matters: a failure passed through as it is (no retry_policy),
		// a failure held back for this target to cancel, a probe, or a
		// target with a streak, an ejection or failures in flight
		// (Attention). The test here is what every success pays.
		if id := int(m.env.ejID[t]); id >= 0 && (o.Err != nil || o.Status >= 429 || m.heldID != 0 || m.probeID != 0 || m.view.Attention(id)) {
			m.delivered(t, o)
		}
		m.flushFailure() // the request ends: nothing is held back past it
		m.shard.count(t, countSuccesses)
		if m.took > 0 {
			m.sampleTTFB(t, m.took) // and clears it
		}
		if m.attempts > 1 && m.env.debug {
			m.logDebug("reroute retry succeeded", zap.String("target", m.name(t)), zap.Int("attempts", m.attempts))
		}
		return Step{Kind: StepDone}
	}
	m.took = 0 // a failed call's time is no sample of its target's time to first token
	act, key := m.failure(t, int(m.curNum), o, class)
	m.newDecision()
	m.curFails++
	if m.count(key) >= act.MaxAttempts {
		return m.fail(ReasonMaxAttempts, false)
	}
	st := m.next(act, t)
	if st.Kind != StepAttempt || st.Target != t {
		m.flushFailure()
	}
	return st
}

// seen takes the outcome o of attempt number n, to target t: it classifies
// it and tells the hooks and the latency rule. Every outcome of a request
// with a retry policy passes here once, observed or failed beside a hedge.
func (m *Machine) seen(t, n int, o *policy.Outcome) policy.Class {
	class, event, measured := m.rules.Classify(o)
	m.last, m.lastClass = *o, class
	m.tell(t, n, o, class, event, measured)
	return class
}

// tell tells the hooks and the latency rule of the outcome o of attempt
// number n, to target t, classified by seen.
func (m *Machine) tell(t, n int, o *policy.Outcome, class policy.Class, event bool, measured time.Duration) {
	if m.env.hooks.Attempt != nil {
		m.env.hooks.Attempt(AttemptEvent{Target: m.name(t), Index: t, Number: n, Status: o.Status, Class: class, TTFB: o.TTFB, Total: o.Total, Err: o.Err})
	}
	if m.env.hooks.Latency != nil && class != policy.HTTPError && class != policy.PassThrough && m.rules.Latency != nil {
		l := m.rules.Latency
		// A stream measured in total is measured when it ends (Result.End).
		if d := l.Measured(o); d > 0 || l.Measure != policy.MeasureTotal {
			m.env.hooks.Latency(m.name(t), d)
		}
	}
	if event {
		m.latencyEvent(t, measured, class.Retriable())
	}
}

// failure records the failed outcome o of attempt number n, to target t,
// classified as class: counts, Retry-After, passive health, the list of
// failed attempts and what the failure forbids. It returns the action and
// the counter key the failure resolves to; the decision is the caller's.
func (m *Machine) failure(t, n int, o *policy.Outcome, class policy.Class) (policy.Action, policy.Key) {
	m.step()
	m.shard.count(t, countFailures)
	rec := FailedAttempt{Target: m.name(t), Number: n, Status: o.Status, Class: class, Err: o.Err, Latency: o.Total}
	if class == policy.HTTPError {
		m.retryHint(t, o, &rec)
	} else if l := m.rules.Latency; l != nil {
		rec.Latency, rec.Threshold = l.Measured(o), l.Threshold
	}
	probed := m.probeID != 0 && int(m.probeTarget) == t
	m.passive(t, o, countsAsFailure(o, rec.RetryAfter > 0)) // a usable hint is a Retry-After block, not a failure
	m.record(rec)
	if m.env.debug {
		m.logDebug("reroute attempt failed", zap.String("target", rec.Target), zap.String("error_type", rec.ErrorType()), zap.Int("attempt", rec.Number), zap.Duration("retry_after", rec.RetryAfter))
	}
	act, key := m.rules.Resolve(class, o.Status)
	m.sameRetries = m.rules.SameRetries(class, o.Status, rec.TimedOut())
	// A failed probe is the target's answer to "are you back?": another
	// attempt to it in the same request is no wiser. Set, not or-ed: the
	// last failure decides (choose clears it too).
	m.noSame = o.NoSameTarget || o.NoSameProvider || probed
	if o.NoSameProvider {
		m.noProviders = append(m.noProviders, m.env.c.ProviderOf[t])
	}
	return act, key
}

// retryHint reads a failed answer's Retry-After (or rate-limit reset) and
// records the block it asks for.
func (m *Machine) retryHint(t int, o *policy.Outcome, rec *FailedAttempt) {
	hint := policy.ParseRetryAfter(o.Status, o.Header, time.Unix(0, m.now()), m.rules.RetryAfter.Max)
	if hint.Malformed && m.env.debug {
		m.logDebug("reroute malformed retry hint ignored", zap.String("target", rec.Target), zap.Int("status", o.Status))
	}
	if !hint.Found {
		return
	}
	rec.RetryAfter = hint.Wait
	m.maxRA = max(m.maxRA, hint.Wait)
	if hint.Capped && m.env.debug {
		m.logDebug("reroute Retry-After capped", zap.String("target", rec.Target), zap.Duration("hinted", hint.Uncapped), zap.Duration("capped", hint.Wait))
	}
	if hint.Wait > 0 {
		m.retryAfter(t, m.now()+int64(hint.Wait), hint.Wait)
	}
}

// Cut takes the outcome of an attempt that the request's own context ended
// (err is the context's error): the attempt was made and failed, but the
// request cannot go on. A deadline exhausts the request (ReasonDeadline,
// with the cut attempt listed as a timeout); a target without a retry
// policy delivers its outcome (with err as its error) as it would any
// other; a cancellation aborts with err.
func (m *Machine) Cut(o *policy.Outcome, err error) Step {
	if o.Err == nil {
		o.Err = err
	}
	if m.rules == nil {
		return m.Observe(o) // delivered as it is, counted as delivered
	}
	m.step()
	t := m.current
	m.shard.count(t, countFailures)
	if m.env.hooks.Attempt != nil {
		m.env.hooks.Attempt(AttemptEvent{Target: m.name(t), Index: t, Number: int(m.curNum), Class: policy.Timeout, TTFB: o.TTFB, Total: o.Total, Err: o.Err})
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		m.releaseProbe() // the caller gave up: the attempt tells nothing
		m.cause = err
		return Step{Kind: StepAbort}
	}
	m.passive(t, o, true) // it did not answer within the request's time
	m.flushFailure()
	m.record(FailedAttempt{Target: m.name(t), Number: int(m.curNum), Class: policy.Timeout, Latency: o.Total, Err: o.Err})
	return m.fail(ReasonDeadline, false)
}

// Interrupt ends the request before the attempt the last step decided
// could be made: its context ended during the wait or just before the
// attempt (err is the context's error), or the engine closed (ErrClosed).
// The attempt is not made, so it is not counted. A deadline exhausts the request
// (ReasonDeadline) when the target has a retry policy, so that a deadline
// ends a request the same way whether it struck during a wait or during an
// attempt; anything else aborts with err.
func (m *Machine) Interrupt(err error) Step {
	m.step()
	m.releaseProbe()
	m.flushFailure()
	if m.rules != nil && errors.Is(err, context.DeadlineExceeded) {
		return m.fail(ReasonDeadline, false)
	}
	m.cause = err
	return Step{Kind: StepAbort}
}

func (m *Machine) record(r FailedAttempt) {
	if m.nfailed < len(m.failed) {
		m.failed[m.nfailed] = r
	} else {
		m.failed2 = append(m.failed2, r)
	}
	m.nfailed++
}

func (m *Machine) count(k policy.Key) int {
	k32 := int32(k)
	for i := 0; i < int(m.nkeys) && i < len(m.keys); i++ {
		if m.keys[i].key == k32 {
			m.keys[i].n++
			return int(m.keys[i].n)
		}
	}
	for i := range m.keys2 {
		if m.keys2[i].key == k32 {
			m.keys2[i].n++
			return int(m.keys2[i].n)
		}
	}
	if int(m.nkeys) < len(m.keys) {
		m.keys[m.nkeys] = keyCount{k32, 1}
		m.nkeys++
	} else {
		m.keys2 = append(m.keys2, keyCount{k32, 1})
	}
	return 1
}

// scopeName names a block scope in logs.
func scopeName(s policy.Scope) string {
	if s == policy.ScopeProvider {
		return "provider"
	}
	return "model"
}

func (m *Machine) retryAfter(t int, until int64, d time.Duration) {
	ra := m.rules.RetryAfter
	id := m.env.c.ID(t, ra.Scope)
	// The request sees its own fact at once; the shared state learns it
	// through the actor, a few microseconds later.
	created := m.facts.blockRetryAfter(id, until)
	if ra.ApplyTo == policy.ApplyRequest {
		if created {
			m.requestBlock(id, health.RetryAfter, ra.Scope, d)
		}
		return
	}
	if st := m.view.Lookup(t, m.now()); ra.Scope == policy.ScopeModel && st.Kind == health.RetryAfter && st.Until >= until {
		return // already known: spare the actor
	}
	m.env.health.ReportRetryAfter(id, until)
}

// requestBlock tells the host about a block this request created for
// itself (apply_to: request). Shared blocks are told by the health actor,
// once per block, whichever request reported the facts.
func (m *Machine) requestBlock(id int, k health.Kind, s policy.Scope, d time.Duration) {
	name := m.env.c.IDName(id)
	if m.env.hooks.Block != nil {
		m.env.hooks.Block(name, k, d)
	}
	if m.env.debug {
		m.logDebug("reroute block created", zap.String("id", name), zap.Stringer("kind", k), zap.String("scope", scopeName(s)), zap.String("apply_to", "request"), zap.Duration("duration", d))
	}
}

// latencyEvent records a latency event of target t. The request keeps its
// own copy only when it goes on (retriable): a slow success ends it, and a
// request-scoped window nobody will read again is not worth keeping.
func (m *Machine) latencyEvent(t int, measured time.Duration, continues bool) {
	l := m.rules.Latency
	id := m.env.c.ID(t, l.Scope)
	now := m.now()
	if continues {
		if blocked, until := m.facts.latencyEvent(id, now, l.MinTriggers, l.Window, l.Block); blocked && l.ApplyTo == policy.ApplyRequest {
			m.requestBlock(id, health.Latency, l.Scope, time.Duration(until-now))
		}
	}
	if l.ApplyTo == policy.ApplyGlobal {
		m.env.health.ReportLatency(id, now, l.MinTriggers, l.Window, l.Block)
	}
}

// skip notes a candidate passed over for being blocked: the shortest such
// block is what the exhaustion reports.
func (m *Machine) skip(t int, st health.Status) {
	rem := time.Duration(st.Until - m.now())
	if m.shortest == 0 || rem < m.shortest {
		m.shortest = rem
	}
	if m.env.debug {
		m.logDebug("reroute candidate skipped as blocked", zap.String("target", m.name(t)), zap.Duration("remaining", rem), zap.Stringer("kind", st.Kind))
	}
}

// next decides where the request goes after a failure of target failed
// classified as act.
func (m *Machine) next(act policy.Action, failed int) Step {
	now := m.now()
	if d := m.rules.MaxRetryDuration; d > 0 {
		if !m.retryStarted {
			m.retryStart, m.retryStarted = now, true
		}
		if now-m.retryStart >= int64(d) {
			return m.fail(ReasonBudget, true)
		}
	}
	t, wait, pos, reason := m.choose(act.Strategy, failed)
	if t < 0 {
		return m.fail(reason, false)
	}
	if bo := m.rules.Backoff; bo != nil && m.attempts > 0 && bo.Applies(m.env.c, failed, t) {
		d := bo.Delay(m.attempts, m.prevWait, m.env.rnd)
		m.prevWait = d
		if m.env.debug {
			m.logDebug("reroute backoff delay", zap.String("target", m.name(t)), zap.Duration("delay", d))
		}
		wait = max(wait, d)
	}
	if d := m.rules.MaxRetryDuration; d > 0 && now+int64(wait) > m.retryStart+int64(d) {
		return m.fail(ReasonBudget, true)
	}
	if m.deadline != 0 && now+int64(wait) >= m.deadline {
		return m.fail(ReasonDeadline, false)
	}
	if m.attempts > 0 {
		if !m.retrying && m.env.maxRetrying > 0 {
			if m.env.retrying.Add(1) > m.env.maxRetrying {
				m.env.retrying.Add(-1)
				return m.fail(ReasonRetryLimit, false)
			}
			m.retrying = true
		}
		// The retry budget protects a provider from its own retries: it
		// counts a retry to the provider that just failed (the same target
		// or a sibling), and lets a failover to another provider through.
		// Failing over is governed by passive health, which takes a
		// provider that keeps failing out of every request's way, and is
		// bounded by max_attempts and max_retrying_requests
		// (docs/behaviour.md#retry-budget).
		if b := m.env.budget; b.enabled && m.env.c.SameProvider(failed, t) && !b.allow(now, m.env.requests()) {
			return m.fail(ReasonBudget, true)
		}
	}
	return m.attempt(t, wait, pos)
}

// choose picks the next target by strategy. It returns -1 and the reason
// when there is none.
func (m *Machine) choose(s policy.Strategy, failed int) (t int, wait time.Duration, fallbackPos int, reason Reason) {
	noSame := m.noSame
	m.noSame = false
	if s == policy.SameModel {
		if m.moved || noSame || !m.canUse(m.primary) {
			return -1, 0, -1, ReasonMaxAttempts
		}
		return m.sameTarget(m.primary)
	}
	if n := m.sameRetries; n > 0 && !noSame && m.attempts > 0 && failed == m.current && m.curFails <= n && m.canUse(failed) {
		// same_model_retries: retry the target that just failed, unless it
		// is blocked: a hinted wait is a reason to move on, not to stay.
		// Nor if passive health has it ejected or half-open: retrying
		// what the process has taken out of the way is a retry storm.
		st := m.lookup(failed)
		if !m.blocked(st) && !st.Ejected {
			return failed, 0, -1, ""
		}
		// A short Retry-After on the target being retried is waited out
		// (same_model_patience_ms), if the wait fits the deadline and the
		// time budget; a longer one, or a latency block, fails over.
		if rem := time.Duration(st.Until - m.now()); m.blocked(st) && !st.Latency && !st.Ejected && rem <= m.rules.SameModelPatience && m.waitFits(rem) {
			return failed, rem, -1, ""
		}
	}
	pp := m.env.c.ProviderOf[m.primary]
	for i, fb := range m.rules.Fallbacks {
		if m.isTried(fb) || !m.matches(fb, s, pp) {
			continue
		}
		a, st := m.availability(fb)
		if a == availBlocked {
			m.skip(fb, st)
			continue
		}
		if !m.take(fb, a, st) {
			continue
		}
		if m.env.debug {
			m.logDebug("reroute fallback chosen", zap.String("target", m.name(fb)), zap.Int("position", i))
		}
		return fb, 0, i, ""
	}
	if t := m.pick(s, pp); t >= 0 {
		return t, 0, -1, ""
	}
	if t := int(m.lastResort) - 1; t >= 0 && m.attempts == 0 {
		// Every candidate is ejected, before the request made any attempt:
		// ejection is the engine's own guess, so rather than fail on it
		// the request tries the one whose ejection ends first (Retry-After
		// and latency blocks are still honoured: they never become a last
		// resort). Once the request has had its attempt, ejected
		// alternatives are skipped: trying them all would turn an outage
		// of every provider into a retry storm.
		if m.env.debug {
			m.logDebug("reroute every candidate ejected: trying the most promising", zap.String("target", m.name(t)))
		}
		_, st := m.availability(t)
		if st.HalfOpen(m.now()) {
			m.take(t, availProbe, st) // its probe, if nobody holds the claim
		}
		return t, 0, -1, ""
	}
	return -1, 0, -1, ReasonProviders
}

// waitFits reports whether a wait of d starting now ends before the
// request's deadline and within its time budget.
func (m *Machine) waitFits(d time.Duration) bool {
	now := m.now()
	if m.deadline != 0 && now+int64(d) >= m.deadline {
		return false
	}
	if b := m.rules.MaxRetryDuration; b > 0 && now+int64(d) > m.retryStart+int64(b) {
		return false
	}
	return true
}

// matches reports whether target t is one the strategy allows, compared
// with the primary's provider pp, not of a provider ruled out, and, for a
// continuation, able to continue.
func (m *Machine) matches(t int, s policy.Strategy, pp int) bool {
	if m.cont != nil && !m.cont.can(t) {
		return false
	}
	p := m.env.c.ProviderOf[t]
	for _, np := range m.noProviders {
		if p == np {
			return false
		}
	}
	return (p == pp) == (s == policy.SameProvider)
}

// Above this many candidates the random pick samples before it scans.
const (
	scanBelow = 64
	pickDraws = 4
)

// pick is the random pick: a target drawn uniformly among those the
// strategy and unlisted_failover allow that are neither tried nor blocked,
// or -1.
//
// With few candidates it counts the eligible ones and draws the k-th, two
// passes over the decision's one view, so both passes agree. With many it
// first draws up to pickDraws candidates uniformly and takes the first
// eligible one: a draw that is kept is uniform among the eligible
// (rejection sampling), and when most candidates are eligible, as in the
// ordinary failover, the decision costs a draw or two instead of a scan of
// the configuration (measured: BenchmarkDoFailover/targets=5000). When the
// draws miss, it falls back to the scan, which is uniform too.
func (m *Machine) pick(s policy.Strategy, pp int) int {
	c := m.env.c
	var pool []int // nil: every target
	n := c.NumTargets()
	switch {
	case m.rules.Unlisted == policy.UnlistedNone:
		return -1 // only the listed fallbacks
	case m.rules.Unlisted == policy.UnlistedSameModel:
		pool = c.Peers[m.primary] // the same model name; matches sorts out the providers
		n = len(pool)
	case s == policy.SameProvider:
		pool = c.Members[pp]
		n = len(pool)
	}
	at := func(i int) int {
		if pool != nil {
			return pool[i]
		}
		return i
	}
	// eligible: usable now, or half-open (usable as its probe if the
	// claim is won; take decides, on the candidate chosen only).
	eligible := func(t int) (avail, health.Status, bool) {
		if m.isTried(t) || !m.matches(t, s, pp) {
			return 0, health.Status{}, false
		}
		a, st := m.availability(t)
		return a, st, a == availYes || a == availProbe
	}
	if n > scanBelow {
		for range pickDraws {
			t := at(int(m.env.rnd.Uint64() % uint64(n)))
			if a, st, ok := eligible(t); ok && m.take(t, a, st) {
				m.picked(t, -1)
				return t
			}
		}
	}
	// A half-open candidate whose claim is lost is ruled out for this
	// decision (claimLost) and the count taken again; there are at most
	// len(claimsLost) such rounds before they are all noted as ejected.
	for range len(m.claimsLost) + 1 {
		count := 0
		for i := range n {
			t := at(i)
			if m.isTried(t) || !m.matches(t, s, pp) {
				continue
			}
			switch a, st := m.availability(t); a {
			case availBlocked:
				if !m.isFallback(t) { // the fallback loop has noted it already
					m.skip(t, st)
				}
			case availEjected:
				m.noteEjected(t, st)
			default:
				count++
			}
		}
		if count == 0 {
			return -1
		}
		k := 0
		if count > 1 {
			k = int(m.env.rnd.Uint64() % uint64(count))
		}
		for i := range n {
			t := at(i)
			a, st, ok := eligible(t)
			if !ok {
				continue
			}
			if k > 0 {
				k--
				continue
			}
			if m.take(t, a, st) {
				m.picked(t, count)
				return t
			}
			break // its claim was lost: count again without it
		}
	}
	return -1
}

func (m *Machine) picked(t, eligible int) {
	if m.env.debug {
		m.logDebug("reroute random pick", zap.String("target", m.name(t)), zap.Int("eligible", eligible))
	}
}

func (m *Machine) isFallback(t int) bool {
	for _, fb := range m.rules.Fallbacks {
		if fb == t {
			return true
		}
	}
	return false
}

// sameTarget retries t: after its Retry-After block if it has one; a
// latency block ends the request.
func (m *Machine) sameTarget(t int) (int, time.Duration, int, Reason) {
	st := m.lookup(t)
	if !m.blocked(st) {
		if st.Ejected {
			if st.HalfOpen(m.now()) && m.take(t, availProbe, st) {
				return t, 0, -1, "" // its probe
			}
			if m.attempts > 0 {
				// Retrying a target passive health has taken out of the
				// way is the retry storm it exists to stop; a request
				// that has made no attempt yet still tries it (same_model
				// has no alternative, and an ejection is a guess).
				m.noteEjected(t, st)
				return -1, 0, -1, ReasonProviders
			}
		}
		return t, 0, -1, ""
	}
	m.skip(t, st)
	if st.Latency {
		return -1, 0, -1, ReasonProviders
	}
	return t, time.Duration(st.Until - m.now()), -1, ""
}

func (m *Machine) fail(r Reason, budget bool) Step {
	err := &ExhaustedError{
		Model:           m.name(m.primary),
		Reason:          r,
		Attempts:        make([]FailedAttempt, 0, m.nfailed),
		MaxRetryAfter:   m.maxRA,
		ShortestBlock:   m.shortest,
		BudgetExhausted: budget,
	}
	if m.nejected > 0 {
		err.Ejected = make([]string, 0, m.nejected)
		for i := 0; i < int(m.nejected) && i < len(m.ejected); i++ {
			err.Ejected = append(err.Ejected, m.name(int(m.ejected[i])))
		}
		for _, t := range m.ejected2 {
			err.Ejected = append(err.Ejected, m.name(int(t)))
		}
	}
	m.releaseProbe()
	err.Attempts = append(err.Attempts, m.failed[:min(m.nfailed, len(m.failed))]...)
	err.Attempts = append(err.Attempts, m.failed2...)
	if m.env.hooks.Exhausted != nil {
		m.env.hooks.Exhausted(r)
	}
	msg := "reroute request exhausted"
	if m.cont != nil {
		msg = "reroute continuation exhausted"
	}
	if ce := m.env.log.Check(zap.WarnLevel, msg); ce != nil {
		ce.Write(zap.String("model", err.Model), zap.String("reason", string(r)), zap.Int("attempts", len(err.Attempts)), zap.Duration("shortest_block", m.shortest), zap.String("request_id", RequestID(m.ctx)))
	}
	return Step{Kind: StepFail, Err: err}
}

// Finish releases what the request holds in the engine (its
// max_retrying_requests slot) and, for a Machine begun with Begin, counts
// the request as ended. Call it once when the request ends.
func (m *Machine) Finish() {
	m.flushFailure()
	if m.retrying {
		m.env.retrying.Add(-1)
		m.retrying = false
	}
	if m.begun {
		m.shard.ended.Add(1)
		m.begun = false
	}
}

// Result returns the delivered attempt's result, after StepDone.
func (m *Machine) Result() Result {
	return Result{
		Target:   m.name(m.current),
		Attempts: m.attempts,
		Number:   int(m.curNum),
		Outcome:  m.last,
		Class:    m.lastClass,
		env:      m.env,
		shard:    m.shard,
		rules:    m.rules,
		target:   int32(m.current),
		primary:  int32(m.primary),
		cont:     m.cont,
	}
}

type unknownModelError struct{ model string }

func (e *unknownModelError) Error() string {
	return "reroute: unknown model " + `"` + e.model + `"` + ": not a configured target"
}

func (e *unknownModelError) Is(target error) bool { return target == ErrUnknownModel }
