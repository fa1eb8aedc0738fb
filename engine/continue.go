package engine

import (
	"context"
	"errors"
	"runtime/debug"
	"time"

	"go.uber.org/zap"

	"github.com/reroute-go/reroute/policy"
)

// This file continues a committed answer that failed: a stream cut or
// stalled after its first byte went to the client. The caller (the HTTP
// adapter) relays the continuation's answer after the text already
// delivered; the engine decides which targets may make it, in what order,
// and when to give up, under the request's retry policy
// (docs/behaviour.md#continuing-a-committed-answer).

// ErrConnectionLost marks the cause of a failure after commit that was the
// connection's (a cut, a stall past the idle timeout), as opposed to the
// answer's (an error event, malformed events): a caller wraps it into the
// cause it passes to Continue (errors.Join), and the target that failed
// may then continue its own answer first.
var ErrConnectionLost = errors.New("reroute: the answer's connection failed after commit")

var errNotDelivered = errors.New("reroute: Continue needs a Result this engine delivered")

// ContinueEvent describes a decision to continue a committed answer that
// failed (Hooks.Continue).
type ContinueEvent struct {
	From, To           string
	FromIndex, ToIndex int           // the targets' indices in the compiled configuration
	Number             int           // the number of the attempt about to be made, counting every attempt of the request
	Wait               time.Duration // the wait before it (backoff, Retry-After)
	Fallback           int           // position in fallback_models, or -1 (the same target, or a random pick)
}

// Continue runs the attempts that continue prev, a Result this engine
// delivered whose answer failed after commit with cause, and returns the
// Result of the attempt whose answer is delivered, or an error: the usual
// *ExhaustedError when no target can continue within the policy's bounds,
// ctx's error, ErrClosed, or a *PanicError. Call prev.End(total, cause)
// first, so that the shared health state has the failure before the
// continuation decides.
//
// The attempts follow prev's request's retry policy (its primary's), as any
// retry of it would: its fallback order and unlisted_failover, its blocks,
// passive health's ejections, max_attempts (the failure after commit counts
// once under on_timeout's counter), backoff, the time budget
// (max_retry_duration_ms, counted from the failure after commit), the
// deadline of ctx, max_retrying_requests and the retry budget. When cause
// matches ErrConnectionLost the target that failed is asked first; after
// any other cause, or once it has failed again, it is not. Only targets for
// which can returns true are candidates: the caller says which can continue
// this answer (a continuation dialect, no rejection of one). A primary
// whose policy has continue_streams false, or no retry_policy, continues
// nothing (*ExhaustedError, providers_exhausted).
//
// call is called once per attempt, as in Do, with Attempt.Continuation set
// and Attempt.Number counting on from prev.Attempts. An attempt whose answer
// cannot be relayed after a committed one (not a 2xx: a pass-through answer,
// a content-policy refusal) ends the continuation as exhausted. A delivered
// continuation is a Result like Do's: report its end with End, and continue
// it again with Continue if it fails after commit.
//
// Continue is safe for concurrent use; Close waits for it as for Do.
func (e *Engine) Continue(ctx context.Context, prev Result, cause error, can func(t int) bool, call Call) (res Result, err error) {
	if ctx == nil || call == nil || can == nil {
		return Result{}, errNilArgument
	}
	if prev.env != &e.env {
		return Result{}, errNotDelivered
	}
	s := e.pickShard()
	s.resumed.Add(1)
	var m Machine
	defer func() {
		if r := recover(); r != nil {
			res, err = Result{}, &PanicError{Target: prev.Target, Value: r, Stack: debug.Stack()}
			e.log.Error("reroute hook panicked", zap.String("target", prev.Target), zap.Any("panic", r))
		}
		e.end(s, &m)
	}()
	if e.closed.Load() {
		return Result{}, ErrClosed
	}
	m.begin(&e.env, s, int(prev.primary))
	m.ctx = ctx
	e.setDeadline(ctx, &m)
	r := resumption{from: int(prev.target), number: prev.Number, attempts: prev.Attempts, cause: cause, can: can}
	if c := prev.cont; c != nil {
		r.cuts, r.cutAt = c.cuts, c.cutAt
	}
	st := m.resume(r)
	return e.drive(ctx, &m, st, call)
}

// resumption is where a continuation starts from.
type resumption struct {
	from     int              // the target whose committed answer failed
	number   int              // that answer's attempt number: with a hedge, not always the last
	attempts int              // the request's attempts up to that answer
	cuts     int              // the failures after commit before that answer (it was a continuation)
	cutAt    int64            // when the first of those happened
	cause    error            // the failure after commit
	can      func(t int) bool // the candidates that can continue it
}

// resumed is a continuation's state in its Machine, and in the Result it
// delivers.
type resumed struct {
	can   func(t int) bool // the candidates that can continue
	cuts  int              // the failures after commit of the request so far
	cutAt int64            // when the first of them happened
}

// resume decides the first step of a continuation of the answer of
// r.from, for a Machine begun for the request's primary. The failure
// after commit is the continuation's first failure: recorded, counted
// under the timeout key (a cut or stall is a transport failure), and the
// start of the time budget. When the answer was itself a continuation,
// the failures after commit before it count too, and the budget runs
// from the first: so continuing continuations is bounded by the same
// max_attempts and max_retry_duration_ms as one. The target that failed is the first candidate
// only when its connection was to blame (same_model_retries of one, for
// this step: a stream cut by a proxy usually continues where it was), and
// only if it is neither blocked nor ejected, as any same-target retry.
func (m *Machine) resume(r resumption) Step {
	m.step()
	c := &resumed{can: r.can, cuts: r.cuts + 1}
	m.cont = c
	m.attempts, m.current, m.moved = r.attempts, r.from, r.from != m.primary
	if r.number == 0 {
		r.number = r.attempts // a Result made by a driver that does not number attempts
	}
	m.curNum = int32(r.number)
	m.markTried(r.from)
	m.record(FailedAttempt{Target: m.name(r.from), Number: r.number, Class: policy.Timeout, Err: r.cause})
	if m.rules == nil || !m.rules.ContinueStreams {
		return m.fail(ReasonProviders, false)
	}
	act, key := m.rules.Resolve(policy.Timeout, 0)
	m.newDecision()
	m.curFails = 1
	if errors.Is(r.cause, ErrConnectionLost) {
		m.sameRetries = 1
	}
	c.cutAt = m.now()
	if r.cuts > 0 {
		c.cutAt = r.cutAt
	}
	if m.rules.MaxRetryDuration > 0 {
		m.retryStart, m.retryStarted = c.cutAt, true
	}
	n := 0
	for range c.cuts {
		n = m.count(key)
	}
	if n >= act.MaxAttempts {
		return m.fail(ReasonMaxAttempts, false)
	}
	return m.next(act, r.from)
}

// canUse reports whether target t may be a candidate of this request: any
// target for an ordinary request, those that can continue for a
// continuation.
func (m *Machine) canUse(t int) bool { return m.cont == nil || m.cont.can(t) }

// continued tells the host about a continuation attempt about to be made.
func (m *Machine) continued(t int, wait time.Duration, pos int) {
	if f := m.env.hooks.Continue; f != nil {
		f(ContinueEvent{From: m.name(m.current), To: m.name(t), FromIndex: m.current, ToIndex: t, Number: m.attempts + 1, Wait: wait, Fallback: pos})
	}
	if ce := m.env.log.Check(zap.InfoLevel, "reroute continuation started"); ce != nil {
		ce.Write(zap.String("from", m.name(m.current)), zap.String("to", m.name(t)), zap.Int("attempt", m.attempts+1),
			zap.Duration("wait", wait), zap.Int("fallback_position", pos), zap.String("request_id", RequestID(m.ctx)))
	}
}

// unrelayable ends a continuation whose attempt t answered with what
// cannot be relayed after the text already delivered: a pass-through
// answer (a content-policy refusal, a status the policy does not retry, an
// answer the caller marked Final). Only a success continues the answer.
// It is a failed attempt, and the continuation is exhausted: an answer
// that says "stop" is not asked of the next target.
func (m *Machine) unrelayable(t int, o *policy.Outcome, class policy.Class) Step {
	m.step()
	m.shard.count(t, countFailures)
	m.passive(t, o, countsAsFailure(o, false))
	m.flushFailure()
	m.record(FailedAttempt{Target: m.name(t), Number: m.attempts, Status: o.Status, Class: class, Err: o.Err, Latency: o.Total})
	return m.fail(ReasonProviders, false)
}
