package peers

import (
	"context"
	"errors"
	"testing"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
)

// Workloads are the named workloads, in display order.
var Workloads = []string{"success", "fail-once"}

// Libraries are the measured libraries, in display order.
var Libraries = []string{"reroute", "failsafe-go"}

const rerouteConfig = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      default_strategy: same_model
      default_max_attempts: 3
engine:
  retry_budget: {enabled: false}
`

var errUpstream = errors.New("upstream 503")

// Bench returns the benchmark function of one library on one workload.
func Bench(library, workload string) func(b *testing.B) {
	failFirst := workload == "fail-once"
	switch library {
	case "reroute":
		return func(b *testing.B) {
			cfg, _, err := policy.Parse([]byte(rerouteConfig))
			if err != nil {
				b.Fatal(err)
			}
			e, err := engine.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			ctx := context.Background()
			call := func(_ context.Context, a engine.Attempt) policy.Outcome {
				if failFirst && a.Number == 1 {
					return policy.Outcome{Status: 503}
				}
				return policy.Outcome{Status: 200}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := e.Do(ctx, "openai/gpt-4o", call); err != nil {
					b.Fatal(err)
				}
			}
		}
	case "failsafe-go":
		return func(b *testing.B) {
			rp := retrypolicy.NewBuilder[int]().WithMaxAttempts(3).WithDelay(0).Build()
			ex := failsafe.With[int](rp)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				n := 0
				_, err := ex.Get(func() (int, error) {
					n++
					if failFirst && n == 1 {
						return 503, errUpstream
					}
					return 200, nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	panic("peers: unknown library " + library)
}
