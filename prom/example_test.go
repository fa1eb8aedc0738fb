package prom_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
	"github.com/reroute-go/reroute/prom"
)

// A host builds the collector from the configuration, passes its hooks to
// the engine, attaches the engine and registers the collector on its own
// registry.
func Example() {
	cfg, _, err := policy.Parse([]byte("model_providers: [{model: openai/gpt-4o}]"))
	if err != nil {
		panic(err)
	}
	col := prom.New(cfg.Compiled())
	eng, err := engine.New(cfg, engine.WithHooks(col.Hooks()))
	if err != nil {
		panic(err)
	}
	defer eng.Close()
	if err := col.Attach(eng); err != nil {
		panic(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(col)
	mux := http.NewServeMux() // the host's server serves mux
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	eng.Do(context.Background(), "openai/gpt-4o", func(context.Context, engine.Attempt) policy.Outcome {
		return policy.Outcome{Status: 200}
	})
	err = testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP reroute_target_results_total Attempts by target and result, from Engine.Counts: success when the answer was delivered, failure otherwise (a stream cut after commit included).
# TYPE reroute_target_results_total counter
reroute_target_results_total{result="failure",target="openai/gpt-4o"} 0
reroute_target_results_total{result="success",target="openai/gpt-4o"} 1
`), "reroute_target_results_total")
	fmt.Println(err)
	// Output: <nil>
}
