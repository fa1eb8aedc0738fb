package httpproxy

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
)

type requestMark struct{}

type attemptMark struct{}

// The request tracer brackets the request (its context reaches every
// attempt; end comes once, after the answer was relayed), the call
// wrapper sees every attempt with that context, and the header injector
// writes from the context the wrapper passed on, under the credentials.
func TestTracingOptions(t *testing.T) {
	t.Parallel()
	var (
		mu     sync.Mutex
		events []string
		ended  = make(chan struct{}, 1)
	)
	log := func(format string, args ...any) {
		mu.Lock()
		events = append(events, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	tracer := func(ctx context.Context, model string) (context.Context, func(engine.Result, error)) {
		log("start %s id=%s", model, engine.RequestID(ctx))
		return context.WithValue(ctx, requestMark{}, "marked"), func(res engine.Result, err error) {
			log("end served_by=%s attempts=%d err=%v", res.Target, res.Attempts, err)
			ended <- struct{}{}
		}
	}
	wrap := func(call engine.Call) engine.Call {
		log("wrap")
		return func(ctx context.Context, a engine.Attempt) policy.Outcome {
			log("attempt %d %s %v", a.Number, a.Target, ctx.Value(requestMark{}))
			o := call(context.WithValue(ctx, attemptMark{}, a.Number), a)
			log("outcome %d", o.Status)
			return o
		}
	}
	inject := func(ctx context.Context, h http.Header) {
		h.Set("X-Test-Attempt", itoa(ctx.Value(attemptMark{}).(int)))
		h.Set("Traceparent", "from-the-injector")
		h.Set("Authorization", "Bearer injected") // the credentials must win: checkCredentials
	}
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [mistral/mistral-large]
      on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 2}]
  - model: mistral/mistral-large
`, map[string][]reply{gpt: {respond(503, `{"error": {"message": "overloaded"}}`)}},
		WithRequestTracer(tracer), WithCallWrapper(wrap), WithHeaderInjector(inject))

	resp, body := f.call(chatBody(gpt), "X-Request-Id", "req-1", "Traceparent", "00-from-the-client")
	if resp.StatusCode != 200 || !strings.Contains(body, `"model":"mistral-large"`) {
		t.Fatalf("status %d, body %s", resp.StatusCode, body)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("end was not called")
	}
	// Refused before the engine: not traced.
	if resp, _ := f.call(chatBody("gpt-5-turbo")); resp.StatusCode != 404 {
		t.Fatalf("unknown model: status %d", resp.StatusCode)
	}
	mu.Lock()
	got := slices.Clone(events)
	mu.Unlock()
	want := []string{
		"start openai/gpt-4o id=req-1",
		"wrap",
		"attempt 1 openai/gpt-4o marked",
		"outcome 503",
		"attempt 2 mistral/mistral-large marked",
		"outcome 200",
		"end served_by=mistral/mistral-large attempts=2 err=<nil>",
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for target, n := range map[string]string{gpt: "1", mist: "2"} {
		reqs := f.ups[target].requests()
		if len(reqs) != 1 {
			t.Fatalf("%s got %d requests", target, len(reqs))
		}
		h := reqs[0].header
		if h.Get("X-Test-Attempt") != n || h.Values("Traceparent")[0] != "from-the-injector" || len(h.Values("Traceparent")) != 1 {
			t.Errorf("%s: X-Test-Attempt %q, Traceparent %q", target, h.Get("X-Test-Attempt"), h.Values("Traceparent"))
		}
	}
}

// An exhausted request ends its tracer with the engine's error, after the
// error was rendered.
func TestRequestTracerExhausted(t *testing.T) {
	t.Parallel()
	got := make(chan error, 1)
	tracer := func(ctx context.Context, model string) (context.Context, func(engine.Result, error)) {
		return ctx, func(_ engine.Result, err error) { got <- err }
	}
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_status_codes: [{codes: [503], strategy: same_model, max_attempts: 2}]
`, map[string][]reply{gpt: {respond(503, `{"error": {"message": "overloaded"}}`)}}, WithRequestTracer(tracer))
	if resp, _ := f.call(chatBody(gpt)); resp.StatusCode != 503 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	select {
	case err := <-got:
		if err == nil || err.Error() != "reroute: openai/gpt-4o: all retry attempts exhausted (max_attempts_reached, 2 attempts, last http_503)" {
			t.Errorf("end got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("end was not called")
	}
}
