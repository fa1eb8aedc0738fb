package otelreroute_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/otelreroute"
	"github.com/reroute-go/reroute/policy"
)

// failover is a primary that fails over to a target of another provider
// on 503, without a wait.
const failover = `
model_providers:
  - model: openai/gpt-4o
    base_url: %GPT%
    access_key: sk-test-GPT-key-1111
    retry_policy:
      fallback_models: [mistral/mistral-large]
      on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 2}]
  - model: mistral/mistral-large
    base_url: %MISTRAL%
    access_key: sk-test-MISTRAL-key-2222
`

func config(yaml string, urls ...string) string {
	return strings.NewReplacer(urls...).Replace(yaml)
}

// wantSpan is what a test asserts of one span, exactly.
type wantSpan struct {
	name       string
	kind       trace.SpanKind
	parent     trace.SpanContext
	start, end time.Time
	attrs      []string
	status     sdktrace.Status
}

func checkSpan(t *testing.T, got tracetest.SpanStub, want wantSpan) {
	t.Helper()
	if got.Name != want.name || got.SpanKind != want.kind || !got.Parent.Equal(want.parent) ||
		!got.StartTime.Equal(want.start) || !got.EndTime.Equal(want.end) || got.Status != want.status {
		t.Errorf("span %s: kind %v, parent %v, %v to %v, status %+v;\nwant %s: kind %v, parent %v, %v to %v, status %+v",
			got.Name, got.SpanKind, got.Parent.SpanID(), got.StartTime, got.EndTime, got.Status,
			want.name, want.kind, want.parent.SpanID(), want.start, want.end, want.status)
	}
	if a := attrs(got.Attributes); !slices.Equal(a, want.attrs) {
		t.Errorf("span %s attributes:\n%s\nwant:\n%s", got.Name, strings.Join(a, "\n"), strings.Join(want.attrs, "\n"))
	}
	if len(got.Events) > 0 || len(got.Links) > 0 {
		t.Errorf("span %s: events %v, links %v", got.Name, got.Events, got.Links)
	}
}

// A request that fails over once through the HTTP adapter is one request
// span with two attempt spans as its children; each upstream receives the
// trace context of its own attempt span.
func TestFailoverSpans(t *testing.T) {
	gpt := newUpstream(t, answer(503, `{"error":{"message":"overloaded"}}`))
	mistral := newUpstream(t, answer(200, completion("mistral-large")))
	g := newGateway(t, config(failover, "%GPT%", gpt.srv.URL+"/v1", "%MISTRAL%", mistral.srv.URL+"/v1"))

	status, body := g.post(`{"model":"openai/gpt-4o","messages":[{"role":"user","content":"hi"}]}`, "X-Request-Id", "req-trace-1")
	if status != 200 || !strings.Contains(body, `"model":"mistral-large"`) {
		t.Fatalf("status %d, body %s", status, body)
	}
	spans := g.spans.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3: %v", len(spans), spans)
	}
	// Exported as they end: the attempts, then the request.
	req, a1, a2 := spans[2], spans[0], spans[1]
	checkSpan(t, req, wantSpan{
		name: otelreroute.SpanRequest, kind: trace.SpanKindInternal, start: at(1), end: at(6),
		attrs: []string{
			"gen_ai.operation.name=chat",
			"gen_ai.request.model=gpt-4o",
			"http.response.status_code=200",
			"reroute.attempts=2",
			"reroute.model=openai/gpt-4o",
			"reroute.request_id=req-trace-1",
			"reroute.result.class=success",
			"reroute.served_by=mistral/mistral-large",
		},
	})
	checkSpan(t, a1, wantSpan{
		name: otelreroute.SpanAttempt, kind: trace.SpanKindClient, parent: req.SpanContext, start: at(2), end: at(3),
		attrs: []string{
			"error.type=http_503",
			"gen_ai.operation.name=chat",
			"gen_ai.provider.name=openai",
			"gen_ai.request.model=gpt-4o",
			"http.response.status_code=503",
			"reroute.attempt.class=http_error",
			"reroute.attempt.number=1",
			"reroute.target=openai/gpt-4o",
		},
		status: sdktrace.Status{Code: codes.Error, Description: "http_503"},
	})
	checkSpan(t, a2, wantSpan{
		name: otelreroute.SpanAttempt, kind: trace.SpanKindClient, parent: req.SpanContext, start: at(4), end: at(5),
		attrs: []string{
			"gen_ai.operation.name=chat",
			"gen_ai.provider.name=mistral",
			"gen_ai.request.model=mistral-large",
			"http.response.status_code=200",
			"reroute.attempt.class=success",
			"reroute.attempt.number=2",
			"reroute.retry.kind=failover",
			"reroute.retry.reason=http_503",
			"reroute.target=mistral/mistral-large",
			"reroute.wait_ms=1",
		},
	})
	if req.Parent.IsValid() || a1.SpanContext.TraceID() != req.SpanContext.TraceID() || a2.SpanContext.TraceID() != req.SpanContext.TraceID() {
		t.Errorf("request parent %v; trace ids %v %v %v", req.Parent, req.SpanContext.TraceID(), a1.SpanContext.TraceID(), a2.SpanContext.TraceID())
	}
	for _, u := range []struct {
		name string
		up   *upstream
		span tracetest.SpanStub
	}{{"openai", gpt, a1}, {"mistral", mistral, a2}} {
		hs := u.up.headers()
		want := "00-" + req.SpanContext.TraceID().String() + "-" + u.span.SpanContext.SpanID().String() + "-01"
		if len(hs) != 1 || len(hs[0].Values("Traceparent")) != 1 || hs[0].Get("Traceparent") != want {
			t.Errorf("%s upstream got traceparent %q, want %q", u.name, traceparents(hs), want)
		}
	}
}

func traceparents(hs []http.Header) [][]string {
	var out [][]string
	for _, h := range hs {
		out = append(out, h.Values("Traceparent"))
	}
	return out
}

// A client's traceparent makes the request span a child of the client's
// span, in the client's trace, and the upstream hears the attempt's span
// in that trace, not the client's.
func TestClientTraceContinued(t *testing.T) {
	gpt := newUpstream(t, answer(200, completion("gpt-4o")))
	mistral := newUpstream(t, answer(200, completion("mistral-large")))
	g := newGateway(t, config(failover, "%GPT%", gpt.srv.URL+"/v1", "%MISTRAL%", mistral.srv.URL+"/v1"))
	const traceID, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	if status, body := g.post(`{"model":"openai/gpt-4o"}`, "Traceparent", "00-"+traceID+"-"+clientSpan+"-01"); status != 200 {
		t.Fatalf("status %d, body %s", status, body)
	}
	spans := g.spans.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	att, req := spans[0], spans[1]
	if req.Name != otelreroute.SpanRequest || req.Parent.TraceID().String() != traceID || req.Parent.SpanID().String() != clientSpan ||
		!req.Parent.IsRemote() || req.SpanContext.TraceID().String() != traceID || att.Parent.SpanID() != req.SpanContext.SpanID() {
		t.Errorf("request span %s: parent %v, context %v; attempt parent %v", req.Name, req.Parent, req.SpanContext, att.Parent)
	}
	want := "00-" + traceID + "-" + att.SpanContext.SpanID().String() + "-01"
	if hs := gpt.headers(); len(hs) != 1 || len(hs[0].Values("Traceparent")) != 1 || hs[0].Get("Traceparent") != want {
		t.Errorf("upstream got traceparent %q, want %q", traceparents(hs), want)
	}
}

// No attribute, status or event of any span holds a body, a prompt or a
// credential: the client's body carries a marker, the upstream's error
// body echoes it, and the fallback is unreachable at a base_url whose
// query holds a key, which a transport error's text would name.
func TestNoSecretsInSpans(t *testing.T) {
	const marker = "MARKER-prompt-7f3a9c"
	secrets := []string{marker, "sk-test-GPT-key-1111", "sk-test-GEMINI-key-3333", "sk-query-secret-4444", "sk-client-OWN-5555", "Say hello"}
	gpt := newUpstream(t, answer(503, `{"error":{"message":"overloaded while reading `+marker+`"}}`))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // connections to it are refused
	g := newGateway(t, config(`
model_providers:
  - model: openai/gpt-4o
    base_url: %GPT%
    access_key: sk-test-GPT-key-1111
    retry_policy:
      fallback_models: [google/gemini-2.0-flash]
      on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 2}]
      on_timeout: {strategy: different_provider, max_attempts: 2}
  - model: google/gemini-2.0-flash
    base_url: http://`+closed+`/v1?key=sk-query-secret-4444
    access_key: sk-test-GEMINI-key-3333
`, "%GPT%", gpt.srv.URL+"/v1"))
	body := `{"model":"openai/gpt-4o","messages":[{"role":"user","content":"Say hello ` + marker + `"}]}`
	status, answer := g.post(body, "Authorization", "Bearer sk-client-OWN-5555")
	if status != 504 || !strings.Contains(answer, "retry_exhausted") {
		t.Fatalf("status %d, body %s", status, answer)
	}
	spans := g.spans.GetSpans()
	if len(spans) != 3 {
		t.Fatalf("%d spans, want 3", len(spans))
	}
	var values []string
	for _, s := range spans {
		values = append(values, s.Name, s.Status.Description)
		for _, kv := range s.Attributes {
			values = append(values, string(kv.Key), kv.Value.String())
		}
		for _, ev := range s.Events {
			values = append(values, ev.Name)
			for _, kv := range ev.Attributes {
				values = append(values, kv.Value.String())
			}
		}
	}
	for _, v := range values {
		for _, s := range secrets {
			if strings.Contains(v, s) {
				t.Errorf("a span holds %q: %q", s, v)
			}
		}
	}
	// The exhausted request's span and the failed fallback's, exactly.
	checkSpan(t, spans[1], wantSpan{
		name: otelreroute.SpanAttempt, kind: trace.SpanKindClient, parent: spans[2].SpanContext, start: at(4), end: at(5),
		attrs: []string{
			"error.type=transport_error",
			"gen_ai.operation.name=chat",
			"gen_ai.provider.name=google",
			"gen_ai.request.model=gemini-2.0-flash",
			"reroute.attempt.class=timeout",
			"reroute.attempt.number=2",
			"reroute.retry.kind=failover",
			"reroute.retry.reason=http_503",
			"reroute.target=google/gemini-2.0-flash",
			"reroute.wait_ms=1",
		},
		status: sdktrace.Status{Code: codes.Error, Description: "transport_error"},
	})
	checkSpan(t, spans[2], wantSpan{
		name: otelreroute.SpanRequest, kind: trace.SpanKindInternal, start: at(1), end: at(6),
		attrs: []string{
			"error.type=retry_exhausted",
			"gen_ai.operation.name=chat",
			"gen_ai.request.model=gpt-4o",
			"http.response.status_code=504",
			"reroute.attempts=2",
			"reroute.budget_exhausted=false",
			"reroute.exhausted.reason=providers_exhausted",
			"reroute.model=openai/gpt-4o",
			"reroute.request_id=" + spanRequestID(spans[2]),
		},
		status: sdktrace.Status{Code: codes.Error, Description: "All retry attempts exhausted: upstream connection failed"},
	})
}

// spanRequestID is the request id the handler made up for a request
// without one.
func spanRequestID(s tracetest.SpanStub) string {
	for _, kv := range s.Attributes {
		if kv.Key == "reroute.request_id" {
			return kv.Value.AsString()
		}
	}
	return ""
}

// Without a recording span in its context, a wrapped call is the call:
// no span is made, and nothing is injected.
func TestWrapCallUntraced(t *testing.T) {
	e := newEngine(t, "model_providers: [{model: openai/gpt-4o}]")
	spans, tp := memoryProvider(t, sdktrace.WithSampler(sdktrace.NeverSample()))
	for _, tc := range []struct {
		name string
		opt  otelreroute.Option
	}{{"noop", otelreroute.WithTracerProvider(noop.NewTracerProvider())}, {"sampled-out", otelreroute.WithTracerProvider(tp)}} {
		t.Run(tc.name, func(t *testing.T) {
			tr := otelreroute.New(e.Compiled(), tc.opt)
			ctx, end := tr.StartRequest(context.Background(), "openai/gpt-4o")
			var inner context.Context
			res, err := e.Do(ctx, "openai/gpt-4o", tr.WrapCall(func(ctx context.Context, a engine.Attempt) policy.Outcome {
				inner = ctx
				return policy.Outcome{Status: 200}
			}))
			end(res, err)
			if err != nil || !trace.SpanFromContext(inner).SpanContext().Equal(trace.SpanFromContext(ctx).SpanContext()) {
				t.Errorf("err %v; the call's span %v, the request's %v", err, trace.SpanFromContext(inner).SpanContext(), trace.SpanFromContext(ctx).SpanContext())
			}
			h := http.Header{}
			tr.Inject(inner, h)
			if len(h) != 0 {
				t.Errorf("injected %v", h)
			}
		})
	}
	if n := len(spans.GetSpans()); n != 0 {
		t.Errorf("%d spans exported", n)
	}
}

// A call that panics still ends its span, as failed; the engine ends the
// request with a *PanicError, and the request span says so.
func TestWrapCallPanic(t *testing.T) {
	e := newEngine(t, "model_providers: [{model: openai/gpt-4o}]")
	spans, tp := memoryProvider(t)
	tr := otelreroute.New(e.Compiled(), otelreroute.WithTracerProvider(tp), otelreroute.WithClock(&stepClock{}))
	ctx, end := tr.StartRequest(context.Background(), "openai/gpt-4o")
	res, err := e.Do(ctx, "openai/gpt-4o", tr.WrapCall(func(context.Context, engine.Attempt) policy.Outcome {
		panic("the call's bug, with sk-secret-in-panic")
	}))
	end(res, err)
	got := spans.GetSpans()
	if len(got) != 2 {
		t.Fatalf("%d spans", len(got))
	}
	want := [][]string{
		{"error.type=panic", "gen_ai.provider.name=openai", "gen_ai.request.model=gpt-4o", "reroute.attempt.number=1", "reroute.target=openai/gpt-4o"},
		{"error.type=panic", "gen_ai.request.model=gpt-4o", "reroute.attempts=1", "reroute.model=openai/gpt-4o"},
	}
	for i, s := range got {
		if a := attrs(s.Attributes); !slices.Equal(a, want[i]) || s.Status != (sdktrace.Status{Code: codes.Error, Description: "panic"}) {
			t.Errorf("span %s: attributes %v, status %+v; want %v", s.Name, a, s.Status, want[i])
		}
	}
}

// An attempt that continues a committed answer says so on its span.
func TestContinuationAttempt(t *testing.T) {
	e := newEngine(t, "model_providers: [{model: openai/gpt-4o, retry_policy: {default_strategy: same_model}}]")
	spans, tp := memoryProvider(t)
	tr := otelreroute.New(e.Compiled(), otelreroute.WithTracerProvider(tp))
	ctx, end := tr.StartRequest(context.Background(), "openai/gpt-4o")
	call := tr.WrapCall(func(context.Context, engine.Attempt) policy.Outcome { return policy.Outcome{Status: 200} })
	res, err := e.Do(ctx, "openai/gpt-4o", call)
	if err != nil {
		t.Fatal(err)
	}
	cause := errors.Join(engine.ErrConnectionLost, errors.New("cut"))
	res.End(time.Second, cause)
	if _, err := e.Continue(ctx, res, cause, func(int) bool { return true }, call); err != nil {
		t.Fatal(err)
	}
	end(res, nil)
	var marked []bool
	for _, s := range spans.GetSpans() {
		if s.Name != otelreroute.SpanAttempt {
			continue
		}
		cont := false
		for _, a := range s.Attributes {
			if a.Key == "reroute.attempt.continuation" {
				cont = a.Value.AsBool()
			}
		}
		marked = append(marked, cont)
	}
	if len(marked) != 2 || marked[0] || !marked[1] {
		t.Fatalf("attempt spans marked %v, want [false true]", marked)
	}
}
