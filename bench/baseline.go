package bench

import (
	"fmt"
	"strings"

	"github.com/reroute-go/reroute/policy"
)

// The policies a run can drive: reroute (the engine), or one of the
// baselines, hand-written retry loops the engine is compared with. A
// baseline is named by its Baseline constant; BaselineNone means reroute.
const (
	PolicyReroute = "reroute"

	BaselineNone  = ""
	BaselineNaive = "naive" // the primary, up to three attempts, at once; never another target
	// BaselineNaiveFailover is BaselineNaive, then the same loop on each
	// of the primary's fallback_models in order.
	BaselineNaiveFailover = "naive-failover"
	// BaselineNoHedge is reroute itself with every retry_policy's hedge
	// turned off (engine.WithoutHedging): what hedging changes, side by
	// side. It is not a naive loop: it has the engine's every other rule.
	BaselineNoHedge = "no-hedge"
)

// Baselines are the known baselines, in the order the documentation
// presents them.
var Baselines = []string{BaselineNaive, BaselineNaiveFailover, BaselineNoHedge}

// naiveBaseline reports a baseline driven by a hand-written loop
// (baselineChain) instead of the engine.
func naiveBaseline(b string) bool { return b == BaselineNaive || b == BaselineNaiveFailover }

// naiveMaxAttempts is the attempts a baseline makes on each target of its
// chain: the original and two immediate retries of the same target.
const naiveMaxAttempts = 3

// baselineChain returns the targets a baseline walks for a request whose
// primary is primary, in order. Both drivers (the simulation's and the
// HTTP client's) take their rule from here, so the two modes cannot
// disagree on it:
//
//   - naive: the primary alone;
//   - naive-failover: the primary, then the primary's fallback_models in
//     the order written (configured targets only, each once, the primary
//     left out: the compiled Rules.Fallbacks). A target without a
//     retry_policy has no fallbacks, and the chain is the primary alone.
//
// Each target of the chain gets up to naiveMaxAttempts attempts, one after
// the other without a wait, and the driver moves on to the next target
// when they are spent. Only a 2xx ends the walk with a success; a 1xx or
// 3xx is delivered as it is; everything else (any 4xx or 5xx, a timeout,
// a reset) is retried alike. No blocks, no budget, no Retry-After, no
// backoff; the request's deadline and each target's attempt timeout apply
// as they do to reroute.
func baselineChain(c *policy.Compiled, primary int, baseline string) []int {
	chain := []int{primary}
	if baseline != BaselineNaiveFailover {
		return chain
	}
	if r := c.Rules[primary]; r != nil {
		for _, t := range r.Fallbacks {
			if t != primary {
				chain = append(chain, t)
			}
		}
	}
	return chain
}

// checkBaseline returns an error unless b is a known baseline or
// BaselineNone.
func checkBaseline(b string) error {
	if b == BaselineNone {
		return nil
	}
	for _, k := range Baselines {
		if b == k {
			return nil
		}
	}
	return fmt.Errorf("loadgen: unknown baseline %q (want %s)", b, strings.Join(Baselines, " or "))
}

// ParseBaselines parses a comma-separated list of baselines, as
// cmd/loadgen's -baseline flag takes it ("naive", "naive,naive-failover").
// Spaces around a name are ignored; "none" and empty items add nothing
// (so "none" and "" give an empty list); a name given twice counts once,
// where it first appears.
func ParseBaselines(list string) ([]string, error) {
	var out []string
	for _, b := range strings.Split(list, ",") {
		b = strings.TrimSpace(b)
		if b == "" || b == "none" {
			continue
		}
		if err := checkBaseline(b); err != nil {
			return nil, err
		}
		dup := false
		for _, have := range out {
			dup = dup || have == b
		}
		if !dup {
			out = append(out, b)
		}
	}
	return out, nil
}

// policyName is the Result.Policy of a run of baseline (BaselineNone:
// reroute).
func policyName(baseline string) string {
	if baseline == BaselineNone {
		return PolicyReroute
	}
	return baseline
}
