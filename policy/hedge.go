package policy

import (
	"math"
	"slices"
	"time"
)

// Defaults and fixed values of retry_policy.hedge
// (docs/configuration.md#hedge).
const (
	// DefaultHedgeMinDelayMs is the least delay a percentile gives: a
	// target whose first tokens come within a few milliseconds is not
	// hedged at once.
	DefaultHedgeMinDelayMs = 100
	// DefaultHedgeMaxDelayMs is the most delay a percentile gives, and
	// the delay while too few times to first token are known.
	DefaultHedgeMaxDelayMs = 10000
	// DefaultHedgeBudgetPercent: hedges may be a tenth of a policy's
	// recent requests. A hedge doubles the cost of the request it
	// hedges; a tenth bounds that to 10 % more upstream calls, while a
	// percentile of 95 wants about 5 %.
	DefaultHedgeBudgetPercent = 10.0
	// DefaultHedgeBudgetMinPerSecond lets a quiet policy hedge a little:
	// one hedge per second of the window whatever the share.
	DefaultHedgeBudgetMinPerSecond = 1.0
	// HedgeBudgetWindow is the sliding window of the hedge budget.
	HedgeBudgetWindow = 10 * time.Second
	// HedgeMinSamples is how many times to first token a target must have
	// reported before its percentile is used instead of max_delay_ms.
	HedgeMinSamples = 16
)

// HedgeRule is a compiled retry_policy.hedge: when an attempt of the
// policy's requests gets a hedge, and how many hedges the policy may start.
// It is immutable.
type HedgeRule struct {
	// Delay is the fixed delay of delay_ms; 0 when the delay is a
	// percentile.
	Delay time.Duration
	// Percentile is delay_percentile (0 < p < 100), 0 with a fixed delay;
	// PercentileIndex is its index in Compiled.TTFBPercentiles.
	Percentile      float64
	PercentileIndex int
	// MinDelay and MaxDelay bound a percentile's delay.
	MinDelay, MaxDelay time.Duration
	// BudgetShare is budget_percent / 100; BudgetMinPerSecond is
	// budget_min_per_second.
	BudgetShare        float64
	BudgetMinPerSecond float64
}

// DelayFor returns the hedge delay of an attempt to a target whose
// percentile of time to first token is p, known when ok (enough samples):
// the fixed delay, or p within MinDelay and MaxDelay, or MaxDelay when p
// is not known.
func (h *HedgeRule) DelayFor(p time.Duration, ok bool) time.Duration {
	switch {
	case h.Percentile == 0:
		return h.Delay
	case !ok:
		return h.MaxDelay
	}
	return min(max(p, h.MinDelay), h.MaxDelay)
}

func compileHedge(h *Hedge, c *Compiled) *HedgeRule {
	r := &HedgeRule{
		BudgetShare:        *h.BudgetPercent / 100,
		BudgetMinPerSecond: *h.BudgetMinPerSecond,
	}
	if h.DelayMs != nil {
		r.Delay = time.Duration(*h.DelayMs) * time.Millisecond
		return r
	}
	r.Percentile = *h.DelayPercentile
	r.MinDelay = time.Duration(*h.MinDelayMs) * time.Millisecond
	r.MaxDelay = time.Duration(*h.MaxDelayMs) * time.Millisecond
	r.PercentileIndex = slices.Index(c.TTFBPercentiles, r.Percentile)
	if r.PercentileIndex < 0 {
		c.TTFBPercentiles = append(c.TTFBPercentiles, r.Percentile)
		r.PercentileIndex = len(c.TTFBPercentiles) - 1
	}
	return r
}

// hedge checks retry_policy.hedge at path p and fills its defaults.
func (k *checker) hedge(p string, h *Hedge) {
	switch {
	case h.DelayMs == nil && h.DelayPercentile == nil:
		k.errorf(p, "a hedge needs delay_ms (a fixed delay) or delay_percentile (a percentile of the target's time to first token)")
	case h.DelayMs != nil && h.DelayPercentile != nil:
		k.errorf(p, "delay_ms and delay_percentile exclude each other: give one")
	case h.DelayMs != nil:
		k.millis(p+".delay_ms", h.DelayMs, true)
		if h.MinDelayMs != nil {
			k.errorf(p+".min_delay_ms", "applies only with delay_percentile; delay_ms is the delay")
		}
		if h.MaxDelayMs != nil {
			k.errorf(p+".max_delay_ms", "applies only with delay_percentile; delay_ms is the delay")
		}
	default:
		if v := *h.DelayPercentile; !(v > 0 && v < 100) { // NaN fails too
			k.errorf(p+".delay_percentile", "must be greater than 0 and less than 100, got %g", v)
		}
		k.millis(p+".min_delay_ms", h.MinDelayMs, false)
		k.millis(p+".max_delay_ms", h.MaxDelayMs, false)
		setDefault(&h.MinDelayMs, DefaultHedgeMinDelayMs)
		setDefault(&h.MaxDelayMs, max(DefaultHedgeMaxDelayMs, *h.MinDelayMs))
		if *h.MinDelayMs > *h.MaxDelayMs {
			k.errorf(p+".max_delay_ms", "must be at least min_delay_ms (%d), got %d", *h.MinDelayMs, *h.MaxDelayMs)
		}
	}
	setDefault(&h.BudgetPercent, DefaultHedgeBudgetPercent)
	if v := *h.BudgetPercent; !(v >= 0 && v <= 100) {
		k.errorf(p+".budget_percent", "must be between 0 and 100, got %g", v)
	}
	setDefault(&h.BudgetMinPerSecond, DefaultHedgeBudgetMinPerSecond)
	if v := *h.BudgetMinPerSecond; !(v >= 0) || math.IsInf(v, 1) {
		k.errorf(p+".budget_min_per_second", "must be a finite number, not negative, got %g", v)
	}
}
