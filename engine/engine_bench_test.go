package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/benbjohnson/clock"

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

// hedgeBenchConfig is benchConfig's policy with a hedge that every
// request may start.
const hedgeBenchConfig = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      hedge: {delay_ms: 100, budget_percent: 100}
  - model: anthropic/claude-3-5-sonnet
engine: {retry_budget: {enabled: false}, passive_health: {enabled: false}}
`

// instantClock is the real clock whose AfterFunc fires at once, whatever
// the delay: the hedge starts as soon as the runtime runs its timer, so
// that a benchmark measures the race and not the delay.
type instantClock struct{ clock.Clock }

func (c instantClock) AfterFunc(_ time.Duration, f func()) *clock.Timer {
	return c.Clock.AfterFunc(0, f)
}

// BenchmarkDoHedged: the path where a hedge fires ("fired"): the primary's
// call waits for its context; the hedge starts on the timer's goroutine,
// answers 200 at once and wins; the primary is cancelled and abandoned.
// It measures the race's own cost: the Machine's copy, two cancellable
// contexts, the timer, the goroutine and the handoffs. "armed": a hedging
// policy whose primary answers before the delay, the cost of arming and
// stopping the timer.
func BenchmarkDoHedged(b *testing.B) {
	e := mustEngine(b, hedgeBenchConfig, WithClock(instantClock{clock.New()}))
	ctx := context.Background()
	call := func(ctx context.Context, a Attempt) policy.Outcome {
		if a.Index != 0 {
			return ok200
		}
		<-ctx.Done()
		return policy.Outcome{Err: ctx.Err()}
	}
	b.Run("fired", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r, err := e.Do(ctx, gpt, call); err != nil || r.Number != 2 {
				b.Fatal(err, r)
			}
		}
	})
	e2 := mustEngine(b, hedgeBenchConfig)
	b.Run("armed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if r, err := e2.Do(ctx, gpt, succeed); err != nil || r.Attempts != 1 {
				b.Fatal(err, r)
			}
		}
	})
}
