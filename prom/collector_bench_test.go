package prom_test

import (
	"context"
	"testing"
	"time"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
	"github.com/reroute-go/reroute/prom"
)

// benchConfig is the engine benchmarks' configuration.
const benchConfig = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      on_status_codes: [{codes: [429, 503], strategy: different_provider, max_attempts: 2}]
  - model: anthropic/claude-3-5-sonnet
  - model: mistral/mistral-large
`

// timed is a success that reports its time to first byte and total, as
// the HTTP adapter's attempts do, so that the collector's histograms
// observe both.
var timed = policy.Outcome{Status: 200, TTFB: 180 * time.Millisecond, Total: 900 * time.Millisecond}

func succeedTimed(context.Context, engine.Attempt) policy.Outcome { return timed }

// BenchmarkDoSuccess is the engine's benchmark of the same name (the
// first attempt succeeds, the call does nothing) with and without the
// collector's hooks, side by side: what a host pays per request for
// exporting metrics. The same call is used in both, so the difference is
// the hooks: one Attempt event, one counter and two histogram
// observations.
func BenchmarkDoSuccess(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts func(b *testing.B) []engine.Option
	}{
		{"no-hooks", func(*testing.B) []engine.Option { return nil }},
		{"collector", func(b *testing.B) []engine.Option {
			return []engine.Option{engine.WithHooks(prom.New(mustConfig(b, benchConfig).Compiled()).Hooks())}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e, err := engine.New(mustConfig(b, benchConfig), bc.opts(b)...)
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			ctx := context.Background()
			b.Run("single", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := e.Do(ctx, "openai/gpt-4o", succeedTimed); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := e.Do(ctx, "openai/gpt-4o", succeedTimed); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}
