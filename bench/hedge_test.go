package bench

import (
	"os"
	"strings"
	"testing"
)

// TestSimPercentileHedge: a delay_percentile hedge in the simulator
// follows the primary's observed times to first token. max_delay_ms is
// 30 s, longer than any first token of the brownout: a simulator that did
// not keep the times would wait it out and never hedge. The healthy
// phase's first tokens put the 90th percentile near 0.5 s (within
// min_delay_ms 1 s), so the brownout's requests hedge after about a
// second.
func TestSimPercentileHedge(t *testing.T) {
	data, err := os.ReadFile("scenarios/ttfb-brownout.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(data), "\n          delay_ms: 2000\n", "\n          delay_percentile: 90\n          min_delay_ms: 1000\n          max_delay_ms: 30000\n", 1)
	if !strings.Contains(src, "delay_percentile") {
		t.Fatal("the scenario's hedge was not rewritten")
	}
	sc, err := ParseScenario("ttfb-percentile.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Simulate(sc, Options{}, BaselineNone)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, r)
	if r.Hedges < r.Requests/4 {
		t.Fatalf("%d hedges of %d requests: the percentile was not followed", r.Hedges, r.Requests)
	}
	noHedge, err := Simulate(sc, Options{}, BaselineNoHedge)
	if err != nil {
		t.Fatal(err)
	}
	// Less than with the fixed 2 s: the attempts that lost are samples
	// too (lower bounds), so the percentile, and the delay, rise as the
	// brownout goes on.
	atMost(t, "p99 with hedging over p99 without", r.LatencyMs.P99/noHedge.LatencyMs.P99, 0.6)
}
