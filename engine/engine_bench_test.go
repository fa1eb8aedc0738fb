package engine

import (
	"context"
	"testing"

	"github.com/reroute-go/reroute/policy"
)

const benchConfig = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      on_status_codes: [{codes: [429, 503], strategy: different_provider, max_attempts: 2}]
  - model: anthropic/claude-3-5-sonnet
  - model: mistral/mistral-large
`

var (
	ok200  = policy.Outcome{Status: 200}
	err503 = policy.Outcome{Status: 503}
)

func succeed(context.Context, Attempt) policy.Outcome { return ok200 }

// failPrimary answers 503 from the primary and 200 from anything else.
func failPrimary(_ context.Context, a Attempt) policy.Outcome {
	if a.Index == 0 {
		return err503
	}
	return ok200
}

// BenchmarkDoSuccess: the first attempt succeeds; the call does nothing.
func BenchmarkDoSuccess(b *testing.B) {
	run := func(b *testing.B, cfg string) {
		e := mustEngine(b, cfg)
		ctx := context.Background()
		b.Run("single", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := e.Do(ctx, gpt, succeed); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := e.Do(ctx, gpt, succeed); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	b.Run("no-timeout", func(b *testing.B) { run(b, benchConfig) })
	b.Run("attempt-timeout", func(b *testing.B) { run(b, benchConfig+"engine: {timeouts: {attempt: 30s}}\n") })
}

// BenchmarkDoFailover: the primary answers 503, the fallback 200, no waits.
func BenchmarkDoFailover(b *testing.B) {
	// A budget large enough never to refuse, so that the benchmark
	// measures the failover path rather than the budget's refusals.
	e := mustEngine(b, benchConfig+"engine: {retry_budget: {enabled: false}}\n")
	ctx := context.Background()
	b.Run("single", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r, err := e.Do(ctx, gpt, failPrimary); err != nil || r.Attempts != 2 {
				b.Fatal(err, r)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := e.Do(ctx, gpt, failPrimary); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
