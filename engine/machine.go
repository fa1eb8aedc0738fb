package engine

import (
	"context"
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
	// pass its outcome to Observe.
	StepAttempt StepKind = iota + 1
	// StepDone: deliver Machine.Result.
	StepDone
	// StepFail: the request is exhausted; Step.Err says why.
	StepFail
)

// Step is a Machine's decision.
type Step struct {
	Kind   StepKind
	Target int           // target index, for StepAttempt
	Wait   time.Duration // for StepAttempt
	Err    *ExhaustedError
}

// Machine is the per-request attempt actor's logic (SPEC §9–10) as a pure
// step function: an outcome in, the next step out. It does no I/O and never
// waits; time comes from the engine's clock or, in the simulator, from
// virtual time (SetNow). Do drives one on the caller's goroutine; the
// simulator drives many in virtual time. A Machine is owned by one
// goroutine; its zero value is unusable: start it with Engine.Begin.
type Machine struct {
	e        *Engine
	rules    *policy.Rules
	primary  int
	current  int
	deadline int64 // unix ns; 0 = none
	attempts int
	moved    bool // an attempt has gone to a target other than the primary
	noSame   bool // the last failure forbids another attempt to the same target
	// providers a failure said not to retry (x-should-retry: false); rare,
	// so a slice allocated only then
	noProviders []int
	curFails    int // failures of the current target in a row
	prevWait    time.Duration
	budget0     int64 // when the first attempt failed, for max_retry_duration_ms
	budgetOn    bool  // budget0 is set (virtual time may start at 0)
	retrying    bool  // holds a max_retrying_requests slot
	shard       *shard

	attempted  [4]uint64 // bitset of targets attempted or skipped at start
	attempted2 []uint64  // for configurations with more than 256 targets

	keys  [6]keyCount
	nkeys int
	keys2 []keyCount

	failed  [2]FailedAttempt
	nfailed int
	failed2 []FailedAttempt

	maxRA    time.Duration
	shortest time.Duration
	local    *health.State // facts of this request: apply_to request, and its own global reports until the snapshot has them

	last      policy.Outcome
	lastClass policy.Class

	virtual bool
	nowNs   int64
	haveNow bool

	ctx context.Context // the request's, for its request id in logs; nil in simulation
}

// logDebug logs a request-path event with the request's id. Callers check
// m.e.debug first, so that a disabled level costs a bool test.
func (m *Machine) logDebug(msg string, fields ...zap.Field) {
	if id := RequestID(m.ctx); id != "" {
		fields = append(fields, zap.String("request_id", id))
	}
	m.e.log.Debug(msg, fields...)
}

type keyCount struct {
	key policy.Key
	n   int
}

// Begin prepares m for a request whose primary is model, for a driver
// other than Do (the simulator). The order of calls is SetNow (virtual time only), Begin,
// SetDeadline, then Start and Observe until a StepDone or StepFail, then
// Finish.
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
	e.begin(m, s, t)
	return nil
}

// begin prepares a zeroed (or freshly reset) m for a request whose primary
// is target t, which must be in range.
func (e *Engine) begin(m *Machine, s *shard, t int) {
	m.e, m.rules, m.primary, m.current, m.shard = e, e.c.Rules[t], t, t, s
	if n := e.c.NumTargets(); n > 256 {
		m.attempted2 = make([]uint64, (n+63)/64)
	}
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
// SetNow. Call it before Begin and before every Start or Observe.
func (m *Machine) SetNow(now int64) { m.virtual, m.nowNs, m.haveNow = true, now, true }

// SetDeadline sets the request's deadline in unix nanoseconds (0: none).
func (m *Machine) SetDeadline(d int64) { m.deadline = d }

// Attempts returns the number of attempts decided so far.
func (m *Machine) Attempts() int { return m.attempts }

func (m *Machine) now() int64 {
	if !m.haveNow {
		m.nowNs, m.haveNow = m.e.now(), true
	}
	return m.nowNs
}

// step starts a decision: a real-time machine reads the clock at most once
// per decision, and only if the decision needs it.
func (m *Machine) step() {
	if !m.virtual {
		m.haveNow = false
	}
}

func (m *Machine) isAttempted(t int) bool {
	if m.attempted2 != nil {
		return m.attempted2[t>>6]&(1<<(t&63)) != 0
	}
	return m.attempted[t>>6]&(1<<(t&63)) != 0
}

func (m *Machine) markAttempted(t int) {
	if m.attempted2 != nil {
		m.attempted2[t>>6] |= 1 << (t & 63)
		return
	}
	m.attempted[t>>6] |= 1 << (t & 63)
}

// lookup combines the shared state with this request's own facts.
func (m *Machine) lookup(t int) health.Status {
	var st health.Status
	if !m.e.health.Clear(t) {
		st = m.e.health.Lookup(t, m.now())
	}
	if m.local != nil {
		ls := m.local.Lookup(t, m.now())
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

func (m *Machine) localState() *health.State {
	if m.local == nil {
		m.local = health.NewState(m.e.c)
	}
	return m.local
}

// Start decides the first step: the block check before the first attempt
// (SPEC §9).
func (m *Machine) Start() Step {
	m.step()
	if m.rules != nil {
		if st := m.lookup(m.primary); m.blocked(st) {
			m.skip(m.primary, st)
			m.markAttempted(m.primary)
			if m.e.debug {
				m.logDebug("reroute primary blocked before first attempt", zap.String("target", m.e.c.Targets[m.primary]), zap.Duration("remaining", time.Duration(st.Until-m.now())))
			}
			return m.next(m.rules.Default, m.primary)
		}
	}
	return m.attempt(m.primary, 0, -1)
}

func (m *Machine) attempt(t int, wait time.Duration, fallbackPos int) Step {
	if m.attempts > 0 && m.e.hooks.Retry != nil {
		m.e.hooks.Retry(RetryEvent{From: m.e.c.Targets[m.current], To: m.e.c.Targets[t], Number: m.attempts + 1, Wait: wait, Fallback: fallbackPos})
	}
	if m.attempts > 0 && m.e.debug {
		m.logDebug("reroute retry started", zap.String("from", m.e.c.Targets[m.current]), zap.String("to", m.e.c.Targets[t]), zap.Int("attempt", m.attempts+1), zap.Duration("wait", wait), zap.Int("fallback_position", fallbackPos))
	}
	m.attempts++
	if t != m.current {
		m.curFails = 0
	}
	m.current = t
	m.markAttempted(t)
	if t != m.primary {
		m.moved = true
	}
	m.shard.count(t, countAttempts)
	if m.attempts > 1 {
		m.shard.count(t, countRetries)
	}
	return Step{Kind: StepAttempt, Target: t, Wait: wait}
}

// abandon takes back the count of the attempt the last step decided, when
// the driver ends the request without making it (Close, cancellation or
// the deadline during its wait), so that Counts count attempts sent.
func (m *Machine) abandon() {
	m.shard.add(m.current, countAttempts, -1)
	if m.attempts > 1 {
		m.shard.add(m.current, countRetries, -1)
	}
}

// Observe takes the outcome of the attempt the last step asked for and
// decides the next step (SPEC §10).
func (m *Machine) Observe(o *policy.Outcome) Step {
	m.step()
	t := m.current
	class, event, measured := m.rules.Classify(o)
	m.last, m.lastClass = *o, class
	if m.e.hooks.Attempt != nil {
		m.e.hooks.Attempt(AttemptEvent{Target: m.e.c.Targets[t], Number: m.attempts, Status: o.Status, Class: class})
	}
	if event {
		m.latencyEvent(t, measured, class.Retriable())
	}
	if !class.Retriable() {
		m.shard.count(t, countSuccesses)
		if m.attempts > 1 && m.e.debug {
			m.logDebug("reroute retry succeeded", zap.String("target", m.e.c.Targets[t]), zap.Int("attempts", m.attempts))
		}
		return Step{Kind: StepDone}
	}
	m.shard.count(t, countFailures)
	rec := FailedAttempt{Target: m.e.c.Targets[t], Number: m.attempts, Status: o.Status, Class: class, Err: o.Err, Latency: o.Total}
	if class == policy.HTTPError {
		hint := policy.ParseRetryAfter(o.Status, o.Header, time.Unix(0, m.now()), m.rules.RetryAfter.Max)
		if hint.Malformed && m.e.debug {
			m.logDebug("reroute malformed retry hint ignored", zap.String("target", rec.Target), zap.Int("status", o.Status))
		}
		if hint.Found {
			rec.RetryAfter = hint.Wait
			m.maxRA = max(m.maxRA, hint.Wait)
			if hint.Capped && m.e.debug {
				m.logDebug("reroute Retry-After capped", zap.String("target", rec.Target), zap.Duration("hinted", hint.Uncapped), zap.Duration("capped", hint.Wait))
			}
			if hint.Wait > 0 {
				m.retryAfter(t, m.now()+int64(hint.Wait), hint.Wait)
			}
		}
	} else {
		if l := m.rules.Latency; l != nil {
			rec.Latency, rec.Threshold = l.Measured(o), l.Threshold
		}
	}
	m.record(rec)
	if m.e.debug {
		m.logDebug("reroute attempt failed", zap.String("target", rec.Target), zap.String("error_type", rec.ErrorType()), zap.Int("attempt", rec.Number), zap.Duration("retry_after", rec.RetryAfter))
	}
	act, key := m.rules.Resolve(class, o.Status)
	m.curFails++
	if o.NoSameTarget || o.NoSameProvider {
		m.noSame = true
	}
	if o.NoSameProvider {
		m.noProviders = append(m.noProviders, m.e.c.ProviderOf[t])
	}
	if m.count(key) >= act.MaxAttempts {
		return m.fail(ReasonMaxAttempts, false)
	}
	return m.next(act, t)
}

// recordTimeout records the attempt cut by the request's own deadline, for
// the exhaustion error.
func (m *Machine) recordTimeout(o *policy.Outcome) {
	m.record(FailedAttempt{Target: m.e.c.Targets[m.current], Number: m.attempts, Class: policy.Timeout, Latency: o.Total, Err: o.Err})
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
	for i := 0; i < m.nkeys && i < len(m.keys); i++ {
		if m.keys[i].key == k {
			m.keys[i].n++
			return m.keys[i].n
		}
	}
	for i := range m.keys2 {
		if m.keys2[i].key == k {
			m.keys2[i].n++
			return m.keys2[i].n
		}
	}
	if m.nkeys < len(m.keys) {
		m.keys[m.nkeys] = keyCount{k, 1}
		m.nkeys++
	} else {
		m.keys2 = append(m.keys2, keyCount{k, 1})
	}
	return 1
}

func (m *Machine) retryAfter(t int, until int64, d time.Duration) {
	ra := m.rules.RetryAfter
	id := m.e.c.ID(t, ra.Scope)
	// The request sees its own fact at once; the shared state learns it
	// through the actor, a few microseconds later.
	m.localState().BlockRetryAfter(id, until)
	if ra.ApplyTo == policy.ApplyGlobal {
		if st := m.e.health.Lookup(t, m.now()); ra.Scope == policy.ScopeModel && st.Kind == health.RetryAfter && st.Until >= until {
			return // already known: spare the actor
		}
		m.e.health.ReportRetryAfter(id, until)
	}
	if m.e.hooks.Block != nil {
		m.e.hooks.Block(m.e.c.IDName(id), health.RetryAfter, d)
	}
}

// latencyEvent records a latency event of target t. The request keeps its
// own copy only when it goes on (retriable): a slow success ends it, and a
// request-scoped window nobody will read again is not worth allocating.
func (m *Machine) latencyEvent(t int, measured time.Duration, continues bool) {
	l := m.rules.Latency
	id := m.e.c.ID(t, l.Scope)
	if m.e.hooks.Latency != nil {
		m.e.hooks.Latency(m.e.c.Targets[t], measured)
	}
	now := m.now()
	if continues {
		m.localState().LatencyEvent(id, now, l.MinTriggers, l.Window, l.Block)
	}
	if l.ApplyTo == policy.ApplyGlobal {
		m.e.health.ReportLatency(id, now, l.MinTriggers, l.Window, l.Block)
	}
	if m.e.hooks.Block != nil {
		m.e.hooks.Block(m.e.c.IDName(id), health.Latency, l.Block)
	}
}

func (m *Machine) skip(t int, st health.Status) {
	rem := time.Duration(st.Until - m.now())
	if m.shortest == 0 || rem < m.shortest {
		m.shortest = rem
	}
	if m.e.debug {
		m.logDebug("reroute candidate skipped as blocked", zap.String("target", m.e.c.Targets[t]), zap.Duration("remaining", rem), zap.Stringer("kind", st.Kind))
	}
}

// next decides where the request goes after a failure of target failed
// classified as act (SPEC §9–10, §15).
func (m *Machine) next(act policy.Action, failed int) Step {
	now := m.now()
	if b := m.rules.Budget; b > 0 {
		if !m.budgetOn {
			m.budget0, m.budgetOn = now, true
		}
		if now-m.budget0 >= int64(b) {
			return m.fail(ReasonBudget, true)
		}
	}
	t, wait, pos, reason := m.choose(act.Strategy, failed)
	if t < 0 {
		return m.fail(reason, false)
	}
	if bo := m.rules.Backoff; bo != nil && m.attempts > 0 && bo.Applies(m.e.c, failed, t) {
		d := bo.Delay(m.attempts, m.prevWait, m.e.rnd)
		m.prevWait = d
		if m.e.debug {
			m.logDebug("reroute backoff delay", zap.String("target", m.e.c.Targets[t]), zap.Duration("delay", d))
		}
		wait = max(wait, d)
	}
	if b := m.rules.Budget; b > 0 && now+int64(wait) > m.budget0+int64(b) {
		return m.fail(ReasonBudget, true)
	}
	if m.deadline != 0 && now+int64(wait) >= m.deadline {
		return m.fail(ReasonDeadline, false)
	}
	if m.attempts > 0 {
		if !m.retrying && m.e.maxRetrying > 0 {
			if m.e.retrying.Add(1) > m.e.maxRetrying {
				m.e.retrying.Add(-1)
				return m.fail(ReasonRetryLimit, false)
			}
			m.retrying = true
		}
		if !m.e.budget.allow(now, m.e.totalRequests()) {
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
		if m.moved || noSame {
			return -1, 0, -1, ReasonMaxAttempts
		}
		return m.sameTarget(m.primary)
	}
	if n := m.rules.SameModelRetries; n > 0 && !noSame && m.attempts > 0 && failed == m.current && m.curFails <= n {
		// The extension: retry the target that just failed, unless it is
		// blocked: a hinted wait is a reason to move on, not to stay.
		if st := m.lookup(failed); !m.blocked(st) {
			return failed, 0, -1, ""
		}
	}
	pp := m.e.c.ProviderOf[m.primary]
	match := func(t int) bool {
		p := m.e.c.ProviderOf[t]
		for _, np := range m.noProviders {
			if p == np {
				return false
			}
		}
		return (p == pp) == (s == policy.SameProvider)
	}
	for i, fb := range m.rules.Fallbacks {
		if m.isAttempted(fb) || !match(fb) {
			continue
		}
		if st := m.lookup(fb); m.blocked(st) {
			m.skip(fb, st)
			continue
		}
		if m.e.debug {
			m.logDebug("reroute fallback chosen", zap.String("target", m.e.c.Targets[fb]), zap.Int("position", i))
		}
		return fb, 0, i, ""
	}
	eligible := 0
	for c := 0; c < m.e.c.NumTargets(); c++ {
		if m.isAttempted(c) || !match(c) {
			continue
		}
		if st := m.lookup(c); m.blocked(st) {
			m.skip(c, st)
			continue
		}
		eligible++
	}
	if eligible == 0 {
		return -1, 0, -1, ReasonProviders
	}
	k := 0
	if eligible > 1 {
		k = int(m.e.rnd.Uint64() % uint64(eligible))
	}
	for c := 0; c < m.e.c.NumTargets(); c++ {
		if m.isAttempted(c) || !match(c) || m.blocked(m.lookup(c)) {
			continue
		}
		if k == 0 {
			if m.e.debug {
				m.logDebug("reroute random pick", zap.String("target", m.e.c.Targets[c]), zap.Int("eligible", eligible))
			}
			return c, 0, -1, ""
		}
		k--
	}
	return -1, 0, -1, ReasonProviders // unreachable: the two passes see the same state
}

// sameTarget retries t: after its Retry-After block if it has one; a
// latency block ends the request (SPEC §9).
func (m *Machine) sameTarget(t int) (int, time.Duration, int, Reason) {
	st := m.lookup(t)
	if !m.blocked(st) {
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
		Model:           m.e.c.Targets[m.primary],
		Reason:          r,
		Attempts:        make([]FailedAttempt, 0, m.nfailed),
		MaxRetryAfter:   m.maxRA,
		ShortestBlock:   m.shortest,
		BudgetExhausted: budget,
	}
	err.Attempts = append(err.Attempts, m.failed[:min(m.nfailed, len(m.failed))]...)
	err.Attempts = append(err.Attempts, m.failed2...)
	if m.e.hooks.Exhausted != nil {
		m.e.hooks.Exhausted(r)
	}
	if ce := m.e.log.Check(zap.WarnLevel, "reroute request exhausted"); ce != nil {
		ce.Write(zap.String("model", err.Model), zap.String("reason", string(r)), zap.Int("attempts", len(err.Attempts)), zap.Duration("shortest_block", m.shortest), zap.String("request_id", RequestID(m.ctx)))
	}
	return Step{Kind: StepFail, Err: err}
}

// Finish releases what the request holds in the engine (its
// max_retrying_requests slot). Call it once when the request ends.
func (m *Machine) Finish() {
	if m.retrying {
		m.e.retrying.Add(-1)
		m.retrying = false
	}
}

// Result returns the delivered attempt's result, after StepDone.
func (m *Machine) Result() Result {
	return Result{
		Target:   m.e.c.Targets[m.current],
		Attempts: m.attempts,
		Outcome:  m.last,
		Class:    m.lastClass,
		e:        m.e,
		rules:    m.rules,
		target:   m.current,
	}
}

type unknownModelError struct{ model string }

func (e *unknownModelError) Error() string {
	return "reroute: unknown model " + `"` + e.model + `"` + ": not a configured target"
}

func (e *unknownModelError) Is(target error) bool { return target == ErrUnknownModel }
