package policy

import (
	"testing"
	"time"
)

func TestHedgeDefaults(t *testing.T) {
	cfg, _ := mustParse(t, withPolicy("hedge:\n  delay_percentile: 95\n"))
	h := cfg.ModelProviders[0].RetryPolicy.Hedge
	if *h.MinDelayMs != DefaultHedgeMinDelayMs || *h.MaxDelayMs != DefaultHedgeMaxDelayMs ||
		*h.BudgetPercent != DefaultHedgeBudgetPercent || *h.BudgetMinPerSecond != DefaultHedgeBudgetMinPerSecond {
		t.Fatalf("defaults not filled: %s", yamlOf(h))
	}
	c := cfg.Compiled()
	r := c.Rules[0].Hedge
	want := HedgeRule{Percentile: 95, MinDelay: 100 * time.Millisecond, MaxDelay: 10 * time.Second, BudgetShare: 0.1, BudgetMinPerSecond: 1}
	if *r != want {
		t.Fatalf("compiled %+v, want %+v", *r, want)
	}
	if len(c.TTFBPercentiles) != 1 || c.TTFBPercentiles[0] != 95 {
		t.Fatalf("TTFBPercentiles = %v, want [95]", c.TTFBPercentiles)
	}
	if c.Rules[1] != nil || c.Rules[0].Hedge == nil {
		t.Fatal("hedge compiled on the wrong target")
	}

	cfg, _ = mustParse(t, withPolicy("hedge: {delay_ms: 2000, budget_percent: 5, budget_min_per_second: 0}\n"))
	r = cfg.Compiled().Rules[0].Hedge
	if r.Delay != 2*time.Second || r.Percentile != 0 || r.BudgetShare != 0.05 || r.BudgetMinPerSecond != 0 {
		t.Fatalf("compiled %+v", *r)
	}
	if len(cfg.Compiled().TTFBPercentiles) != 0 {
		t.Fatal("a fixed delay needs no percentile")
	}
	// A min_delay_ms above the default maximum moves the maximum's default.
	cfg, _ = mustParse(t, withPolicy("hedge: {delay_percentile: 50, min_delay_ms: 20000}\n"))
	if r := cfg.Compiled().Rules[0].Hedge; r.MaxDelay != 20*time.Second {
		t.Fatalf("max delay %v, want 20s", r.MaxDelay)
	}
	// No hedge block: no hedging.
	cfg, _ = mustParse(t, withPolicy("default_max_attempts: 2\n"))
	if cfg.Compiled().Rules[0].Hedge != nil {
		t.Fatal("hedging without a hedge block")
	}
}

func TestHedgeDelayFor(t *testing.T) {
	fixed := HedgeRule{Delay: time.Second}
	if d := fixed.DelayFor(5*time.Second, true); d != time.Second {
		t.Fatalf("fixed: %v", d)
	}
	p := HedgeRule{Percentile: 95, MinDelay: 100 * time.Millisecond, MaxDelay: 3 * time.Second}
	for _, c := range []struct {
		p    time.Duration
		ok   bool
		want time.Duration
	}{
		{time.Second, true, time.Second},
		{time.Millisecond, true, 100 * time.Millisecond},
		{time.Minute, true, 3 * time.Second},
		{time.Second, false, 3 * time.Second},
	} {
		if d := p.DelayFor(c.p, c.ok); d != c.want {
			t.Errorf("DelayFor(%v, %v) = %v, want %v", c.p, c.ok, d, c.want)
		}
	}
}

func TestHedgeInvalid(t *testing.T) {
	h := rp + ".hedge"
	for _, c := range []struct {
		body  string
		wants []want
	}{
		{"hedge: {}", []want{{h, 0, "needs delay_ms"}}},
		{"hedge: {delay_ms: 100, delay_percentile: 90}", []want{{h, 0, "exclude each other"}}},
		{"hedge: {delay_ms: 0}", []want{{h + ".delay_ms", 0, "greater than 0"}}},
		{"hedge: {delay_ms: 86400001}", []want{{h + ".delay_ms", 0, "at most"}}},
		{"hedge: {delay_ms: 100, min_delay_ms: 5}", []want{{h + ".min_delay_ms", 0, "only with delay_percentile"}}},
		{"hedge: {delay_ms: 100, max_delay_ms: 5}", []want{{h + ".max_delay_ms", 0, "only with delay_percentile"}}},
		{"hedge: {delay_percentile: 100}", []want{{h + ".delay_percentile", 0, "less than 100"}}},
		{"hedge: {delay_percentile: 0}", []want{{h + ".delay_percentile", 0, "greater than 0"}}},
		{"hedge: {delay_percentile: .nan}", []want{{h + ".delay_percentile", 0, "got NaN"}}},
		{"hedge: {delay_percentile: 90, min_delay_ms: 500, max_delay_ms: 400}", []want{{h + ".max_delay_ms", 0, "at least min_delay_ms"}}},
		{"hedge: {delay_percentile: 90, min_delay_ms: -1}", []want{{h + ".min_delay_ms", 0, "greater than 0"}}},
		{"hedge: {delay_ms: 100, budget_percent: 101}", []want{{h + ".budget_percent", 0, "between 0 and 100"}}},
		{"hedge: {delay_ms: 100, budget_min_per_second: -1}", []want{{h + ".budget_min_per_second", 0, "not negative"}}},
		{"hedge: {delay_ms: 100, budget_min_per_second: .inf}", []want{{h + ".budget_min_per_second", 0, "finite"}}},
		{"hedge: {delay_ms: 100, delay: 5}", []want{{h + ".delay", 0, ""}}},
	} {
		t.Run(c.body, func(t *testing.T) {
			checkProblems(t, "errors", parseError(t, withPolicy(c.body)), c.wants)
		})
	}
}

func TestHedgeSameModelWarns(t *testing.T) {
	_, warns := mustParse(t, withPolicy("default_strategy: same_model\nhedge: {delay_ms: 100}\n"))
	var got []Problem
	for _, w := range warns {
		got = append(got, Problem(w))
	}
	checkProblems(t, "warnings", got, []want{{rp + ".hedge", 0, "no hedge will start"}})
}
