package otelreroute

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/benbjohnson/clock"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
)

// ScopeName is the instrumentation scope of the spans.
const ScopeName = "github.com/reroute-go/reroute/otelreroute"

// Tracer makes the spans of the requests of one engine. Create it with
// New; it is safe for concurrent use, and holds no per-request state of
// its own: what a request's attempt spans need (the previous attempt's
// end, target and error) lives in the context StartRequest returns.
type Tracer struct {
	tr    trace.Tracer
	prop  propagation.TextMapPropagator
	clock clock.Clock
	c     *policy.Compiled
	op    []attribute.KeyValue // gen_ai.operation.name, or none
}

// New makes a Tracer for the engine whose compiled configuration is c
// (Engine.Compiled): attempt spans read their provider names and retry
// policies there, by the attempt's target index.
func New(c *policy.Compiled, opts ...Option) *Tracer {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	t := &Tracer{tr: o.provider.Tracer(ScopeName), prop: o.prop, clock: o.clock, c: c}
	if o.operation != "" {
		t.op = []attribute.KeyValue{keyOperation.String(o.operation)}
	}
	return t
}

// requestKey carries a request's *request in the context StartRequest
// returns.
type requestKey struct{}

// request is what a request's attempt spans share. It is used by one
// goroutine at a time: the engine makes the attempts of a request one
// after another on the goroutine that called Do.
type request struct {
	span    trace.Span
	primary int // the primary's target index, whose retry policy classifies every attempt; -1 if unknown
	// mu guards the rest: a hedge's call runs beside the attempt it
	// hedges (docs/behaviour.md#hedging).
	mu       sync.Mutex
	attempts int       // attempt spans made
	lastEnd  time.Time // the previous attempt's end
	last     int       // the previous attempt's target index
	lastErr  string    // the previous attempt's error type
}

// StartRequest starts the span of a request whose primary target is
// model, as a child of the span in ctx if any, and returns the context to
// run the request with (engine.Do, DoTarget) and the function that ends
// the span with what the engine returned. Call end exactly once, after
// the answer was delivered (a stream relayed to its end), on any
// goroutine. The shape is httpproxy.RequestTracer's.
func (t *Tracer) StartRequest(ctx context.Context, model string) (context.Context, func(engine.Result, error)) {
	start := t.clock.Now()
	ctx, span := t.tr.Start(ctx, SpanRequest, trace.WithSpanKind(trace.SpanKindInternal), trace.WithTimestamp(start))
	if !span.IsRecording() {
		// Ending a span that does not record does nothing.
		return ctx, noEnd
	}
	name, primary := model, -1
	if i, ok := t.c.Lookup(model); ok {
		name, primary = t.c.Models[i], i
	}
	span.SetAttributes(t.op...)
	span.SetAttributes(keyPrimary.String(model), keyModel.String(name))
	if id := engine.RequestID(ctx); id != "" {
		span.SetAttributes(keyRequestID.String(id))
	}
	rq := &request{span: span, primary: primary, last: -1}
	return context.WithValue(ctx, requestKey{}, rq), func(res engine.Result, err error) { t.endRequest(rq, res, err) }
}

func noEnd(engine.Result, error) {}

// endRequest records the request's final outcome and ends its span.
func (t *Tracer) endRequest(rq *request, res engine.Result, err error) {
	span := rq.span
	if err == nil {
		span.SetAttributes(keyAttempts.Int(res.Attempts), keyServedBy.String(res.Target), keyResult.String(res.Class.String()))
		if res.Outcome.Status > 0 {
			span.SetAttributes(keyStatus.Int(res.Outcome.Status))
		}
		span.End(trace.WithTimestamp(t.clock.Now()))
		return
	}
	var ex *engine.ExhaustedError
	if errors.As(err, &ex) {
		span.SetAttributes(keyAttempts.Int(len(ex.Attempts)), keyReason.String(string(ex.Reason)),
			keyBudget.Bool(ex.BudgetExhausted), keyStatus.Int(ex.Status()), keyErrorType.String(errRetryExhausted))
		if len(ex.Ejected) > 0 {
			span.SetAttributes(keyEjected.StringSlice(ex.Ejected))
		}
		// Message is one of a few fixed sentences; err's own text names
		// the model and the last error type, both attributes already.
		span.SetStatus(codes.Error, ex.Message())
	} else {
		typ := requestErrorType(err)
		span.SetAttributes(keyAttempts.Int(rq.attempts), keyErrorType.String(typ))
		span.SetStatus(codes.Error, typ)
	}
	span.End(trace.WithTimestamp(t.clock.Now()))
}

// requestErrorType names an error Do returned other than exhaustion. The
// error's text is never recorded: a panic's value can be anything.
func requestErrorType(err error) string {
	var pe *engine.PanicError
	switch {
	case errors.Is(err, context.Canceled):
		return errCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return errDeadline
	case errors.Is(err, engine.ErrClosed):
		return errClosed
	case errors.Is(err, engine.ErrUnknownModel):
		return errUnknownModel
	case errors.As(err, &pe):
		return errPanic
	}
	return errOther
}

// WrapCall returns call with a span around each attempt: a child of the
// span in the attempt's context (the request span), passed on to call in
// its context, so that Inject writes it upstream. The span ends when call
// returns (for a stream, at its first event, the commit point), with the
// outcome's status, class and error type; a failed attempt's status is
// Error. The returned call is safe for concurrent use by several requests
// if call is. The shape is what httpproxy.WithCallWrapper takes.
//
// An attempt whose context carries no recording span is not traced: call
// is called as it is. Under a span StartRequest did not make, attempts
// carry no reroute.wait_ms or reroute.retry.* (the request's previous
// attempt is not known) and are classified with their own target's retry
// policy instead of the primary's.
func (t *Tracer) WrapCall(call engine.Call) engine.Call {
	return func(ctx context.Context, a engine.Attempt) policy.Outcome {
		if !trace.SpanFromContext(ctx).IsRecording() {
			return call(ctx, a)
		}
		return t.attempt(ctx, a, call)
	}
}

// attempt runs call in an attempt span.
func (t *Tracer) attempt(ctx context.Context, a engine.Attempt, call engine.Call) policy.Outcome {
	rq, _ := ctx.Value(requestKey{}).(*request)
	known := a.Index >= 0 && a.Index < len(t.c.Targets) // a tracer made for this engine
	attrs := make([]attribute.KeyValue, 0, 12)
	attrs = append(attrs, t.op...)
	if known {
		attrs = append(attrs, keyProvider.String(t.c.Providers[t.c.ProviderOf[a.Index]]))
	}
	attrs = append(attrs, keyModel.String(a.Model), keyTarget.String(a.Target), keyNumber.Int(a.Number))
	if a.Continuation {
		attrs = append(attrs, keyContinues.Bool(true))
	}
	start := t.clock.Now()
	if rq != nil {
		rq.mu.Lock()
		switch {
		case a.Hedge:
			// Beside the attempt it hedges, which has not ended: no wait
			// and no cause.
			attrs = append(attrs, keyRetryKind.String("hedge"))
		case rq.attempts > 0:
			kind := "failover"
			if rq.last == a.Index {
				kind = "same_target"
			}
			wait := start.Sub(rq.lastEnd)
			if a.Continuation && rq.lastErr == "" {
				// The attempt before was the answer being continued: its
				// span ended at its commit point, not when its stream
				// failed, so the time since says how long the stream was
				// relayed. The engine's own wait is what it added.
				wait = a.Wait
			}
			attrs = append(attrs, keyWait.Float64(ms(wait)), keyRetryKind.String(kind))
			if rq.lastErr != "" {
				attrs = append(attrs, keyRetryCause.String(rq.lastErr))
			}
		}
		rq.mu.Unlock()
	}
	ctx, span := t.tr.Start(ctx, SpanAttempt, trace.WithSpanKind(trace.SpanKindClient), trace.WithTimestamp(start), trace.WithAttributes(attrs...))
	ended := false
	defer func() {
		if !ended { // call panicked: the engine recovers it and ends the request
			span.SetAttributes(keyErrorType.String(errPanic))
			span.SetStatus(codes.Error, errPanic)
			span.End()
			if rq != nil {
				rq.mu.Lock()
				rq.attempts++
				rq.mu.Unlock()
			}
		}
	}()
	o := call(ctx, a)
	end := t.clock.Now()
	ended = true
	if errors.Is(context.Cause(ctx), engine.ErrAbandoned) {
		// It lost to the other attempt of a hedge's race: neither a
		// success nor a failure, as the engine counts it.
		span.SetAttributes(keyAbandoned.Bool(true))
		span.End(trace.WithTimestamp(end))
		if rq != nil {
			rq.mu.Lock()
			rq.attempts++
			rq.mu.Unlock()
		}
		return o
	}

	// The class the policy gives the outcome as call returned it; the
	// span's duration stands in for a latency call did not report, as the
	// engine's own measurement does.
	// An outcome without status or error is a failed attempt to the
	// engine, as here.
	oc := o
	if oc.TTFB == 0 && oc.Total == 0 {
		oc.TTFB, oc.Total = end.Sub(start), end.Sub(start)
	}
	if oc.Status == 0 && oc.Err == nil {
		oc.Err = errNoAnswer
	}
	// The engine classifies every attempt of a request with its
	// primary's retry policy, whichever target the attempt went to.
	primary := a.Index
	if rq != nil && rq.primary >= 0 {
		primary = rq.primary
	}
	var rules *policy.Rules
	if primary >= 0 && primary < len(t.c.Rules) {
		rules = t.c.Rules[primary]
	}
	class, _, _ := rules.Classify(&oc)
	span.SetAttributes(keyClass.String(class.String()))
	if o.Status > 0 {
		span.SetAttributes(keyStatus.Int(o.Status))
	}
	typ := attemptErrorType(&oc, class)
	if typ != "" {
		span.SetAttributes(keyErrorType.String(typ))
		span.SetStatus(codes.Error, typ)
	}
	span.End(trace.WithTimestamp(end))
	if rq != nil {
		rq.mu.Lock()
		rq.attempts++
		rq.lastEnd, rq.last, rq.lastErr = end, a.Index, typ
		rq.mu.Unlock()
	}
	return o
}

// attemptErrorType names a failed attempt's error in the words of the
// exhaustion body's error_type (engine.FailedAttempt.ErrorType), without
// its durations so that the values stay few: http_<status>, timeout,
// transport_error, high_latency; "" for an attempt that did not fail. An
// answer passed through as it is fails when its status is 4xx or 5xx.
func attemptErrorType(o *policy.Outcome, class policy.Class) string {
	switch {
	case class == policy.LatencyFailure:
		return "high_latency"
	case o.Err != nil:
		if (engine.FailedAttempt{Class: policy.Timeout, Err: o.Err}).TimedOut() {
			return "timeout"
		}
		return "transport_error"
	case o.Status >= 400:
		return "http_" + strconv.Itoa(o.Status)
	}
	return ""
}

// errNoAnswer stands for the error of an outcome with neither a status nor
// an error.
var errNoAnswer = errors.New("reroute/otelreroute: call returned neither a status nor an error")

// Inject writes the trace context of ctx (the attempt's, in a call
// WrapCall wrapped) into h with the tracer's propagator. The shape is
// httpproxy.WithHeaderInjector's.
func (t *Tracer) Inject(ctx context.Context, h http.Header) {
	t.prop.Inject(ctx, propagation.HeaderCarrier(h))
}

// Extract returns a handler that serves next with the trace context the
// client's request headers carry (traceparent), so that the request span
// continues the client's trace. A request without one is served as it is.
func (t *Tracer) Extract(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := t.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		if ctx != r.Context() {
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(w, r)
	})
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
