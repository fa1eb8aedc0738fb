package otelreroute_test

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/otelreroute"
	"github.com/reroute-go/reroute/policy"
)

// An attempt cancelled for losing to its hedge is neither a success nor a
// failure (as reroute_abandoned_attempts_total counts it): its span says
// reroute.attempt.abandoned, with no error.type, class or Error status.
func TestHedgeLoserSpan(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      hedge: {delay_ms: 1000}
  - model: anthropic/claude-3-5-sonnet
`)
		spans, tp := memoryProvider(t)
		tr := otelreroute.New(e.Compiled(), otelreroute.WithTracerProvider(tp))
		ctx, end := tr.StartRequest(context.Background(), "openai/gpt-4o")
		res, err := e.Do(ctx, "openai/gpt-4o", tr.WrapCall(func(ctx context.Context, a engine.Attempt) policy.Outcome {
			if a.Hedge {
				return policy.Outcome{Status: 200}
			}
			<-ctx.Done() // the primary never answers: it loses
			return policy.Outcome{Err: ctx.Err()}
		}))
		end(res, err)
		if err != nil || res.Number != 2 {
			t.Fatalf("Do = %+v, %v; want the hedge delivered", res, err)
		}
		want := map[string][]string{
			"openai/gpt-4o":               {"gen_ai.provider.name=openai", "gen_ai.request.model=gpt-4o", "reroute.attempt.abandoned=true", "reroute.attempt.number=1", "reroute.target=openai/gpt-4o"},
			"anthropic/claude-3-5-sonnet": {"gen_ai.provider.name=anthropic", "gen_ai.request.model=claude-3-5-sonnet", "reroute.attempt.class=success", "http.response.status_code=200", "reroute.attempt.number=2", "reroute.retry.kind=hedge", "reroute.target=anthropic/claude-3-5-sonnet"},
		}
		n := 0
		for _, s := range spans.GetSpans() {
			if s.Name != otelreroute.SpanAttempt {
				continue
			}
			n++
			var target string
			for _, kv := range s.Attributes {
				if kv.Key == "reroute.target" {
					target = kv.Value.AsString()
				}
			}
			w := slices.Clone(want[target])
			slices.Sort(w)
			if a := attrs(s.Attributes); !slices.Equal(a, w) || s.Status != (sdktrace.Status{}) {
				t.Errorf("%s attempt span: attributes %v, status %+v; want %v, no status", target, a, s.Status, w)
			}
		}
		if n != 2 {
			t.Fatalf("%d attempt spans, want 2", n)
		}
	})
}
