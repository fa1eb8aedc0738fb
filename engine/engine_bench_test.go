package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/reroute-go/reroute/health"
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
	run := func(b *testing.B, cfg string, opts ...Option) {
		e := mustEngine(b, cfg, opts...)
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
	// With the fact sink a sharing host attaches (redishealth): a success
	// creates no fact, so it must cost the same.
	b.Run("fact-sink", func(b *testing.B) {
		run(b, benchConfig, WithHealthOptions(health.WithFactSink(make(chan health.Fact, 1024))))
	})
}

// BenchmarkDoFailover: the primary answers 503, the fallback 200, no waits.
func BenchmarkDoFailover(b *testing.B) {
	// No budget to refuse and no passive health to eject the primary
	// that always fails, so that every request takes the failover path.
	e := mustEngine(b, benchConfig+"engine: {retry_budget: {enabled: false}, passive_health: {enabled: false}}\n")
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

// manyTargets is a configuration of n targets over n/10 providers (at
// least 2): the primary p0/m0 fails over by the random pick, with no
// fallbacks listed, to another provider's target or (strategy
// same_provider) to one of its own provider's, a retry the budget counts.
func manyTargets(n int, strategy, engineCfg string) string {
	var b strings.Builder
	b.WriteString("model_providers:\n  - model: p0/m0\n    retry_policy: {default_strategy: " + strategy + ", default_max_attempts: 2}\n")
	providers := max(n/10, 2)
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "  - model: p%d/m%d\n", i%providers, i)
	}
	b.WriteString(engineCfg)
	return b.String()
}

// BenchmarkDoFailoverTargets: one failover decision, by the random pick,
// as the configuration grows. The decision must not scan the
// configuration: at 5,000 targets it stays within a microsecond.
func BenchmarkDoFailoverTargets(b *testing.B) {
	for _, tc := range []struct {
		name     string
		n        int
		strategy string
		eng      string
	}{
		{"targets=11", 11, "different_provider", "engine: {retry_budget: {enabled: false}, passive_health: {enabled: false}}\n"},
		{"targets=5000", 5000, "different_provider", "engine: {retry_budget: {enabled: false}, passive_health: {enabled: false}}\n"},
		// A budget that never refuses: what consulting it costs.
		{"targets=5000/budget", 5000, "same_provider", "engine: {retry_budget: {percent: 100, min_per_second: 1000000000}, passive_health: {enabled: false}}\n"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := mustEngine(b, manyTargets(tc.n, tc.strategy, tc.eng))
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if r, err := e.Do(ctx, "p0/m0", failPrimary); err != nil || r.Attempts != 2 {
					b.Fatal(err, r)
				}
			}
		})
	}
}
