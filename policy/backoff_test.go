package policy

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// newRand returns a seeded generator: tests are deterministic.
func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

func TestDelayWithoutJitter(t *testing.T) {
	b := &BackoffRule{Gate: BackoffGlobal, Base: 100 * ms, Max: 5000 * ms, Jitter: JitterNone}
	var got []time.Duration
	for attempt := 1; attempt <= 8; attempt++ {
		got = append(got, b.Delay(attempt, 0, nil))
	}
	want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5000 * ms, 5000 * ms}
	if !slices.Equal(got, want) {
		t.Errorf("delays = %v, want %v", got, want)
	}
	// Saturation: very late attempts never overflow.
	for _, attempt := range []int{30, 61, 62, 63, 64, 100, math.MaxInt32, math.MaxInt} {
		if d := b.Delay(attempt, 0, nil); d != 5000*ms {
			t.Errorf("Delay(%d) = %v, want the cap", attempt, d)
		}
	}
	// Before the first attempt (not called so by the engine): the base.
	for _, attempt := range []int{0, -1} {
		if d := b.Delay(attempt, 0, nil); d != 100*ms {
			t.Errorf("Delay(%d) = %v, want the base", attempt, d)
		}
	}
}

// naiveCapped is the reference: base × 2^(attempt−1) computed in float,
// capped at max.
func naiveCapped(base, max time.Duration, attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	raw := float64(base) * math.Pow(2, float64(attempt-1))
	if raw >= float64(max) {
		return max
	}
	return time.Duration(raw)
}

// TestDelayAgainstNaive compares the shift-and-saturate computation with
// the float reference over random bases, caps and attempt numbers,
// including ones near the int64 limit.
func TestDelayAgainstNaive(t *testing.T) {
	r := newRand(1)
	for range 20000 {
		base := time.Duration(1 + r.Int64N(int64(time.Hour)))
		max := base + time.Duration(1+r.Int64N(math.MaxInt64-int64(base)-1))
		if r.IntN(2) == 0 {
			max = base + time.Duration(1+r.Int64N(int64(time.Hour)))
		}
		attempt := 1 + r.IntN(80)
		b := &BackoffRule{Gate: BackoffGlobal, Base: base, Max: max, Jitter: JitterNone}
		got, want := b.Delay(attempt, 0, nil), naiveCapped(base, max, attempt)
		// float64 has 53 bits of mantissa: allow a relative error of 2^-50.
		if diff := math.Abs(float64(got - want)); diff > float64(want)/(1<<50)+1 {
			t.Fatalf("base %v max %v attempt %d: Delay %v, naive %v", base, max, attempt, got, want)
		}
		if got <= 0 || got > max {
			t.Fatalf("base %v max %v attempt %d: Delay %v out of (0, max]", base, max, attempt, got)
		}
	}
}

// TestDelayJitterRanges draws many delays per jitter kind and checks each
// against its range (docs/behaviour.md#backoff-gate), and that none exceeds max_ms.
func TestDelayJitterRanges(t *testing.T) {
	const draws = 20000
	cases := []struct{ base, max time.Duration }{
		{100 * ms, 5000 * ms},
		{500 * ms, 30000 * ms},
		{1 * ms, 3 * ms},
		{time.Nanosecond, 2 * time.Nanosecond},
	}
	for _, c := range cases {
		for _, j := range []Jitter{JitterNone, JitterEqual, JitterFull, JitterDecorrelated} {
			b := &BackoffRule{Gate: BackoffGlobal, Base: c.base, Max: c.max, Jitter: j}
			r := newRand(uint64(c.base) ^ uint64(len(j)))
			var prev time.Duration
			for i := range draws {
				attempt := 1 + i%12
				if attempt == 1 {
					prev = 0 // a new request
				}
				d := b.Delay(attempt, prev, r)
				capped := naiveCapped(c.base, c.max, attempt)
				var lo, hi time.Duration
				var hiOpen bool
				switch j {
				case JitterNone:
					lo, hi = capped, capped
				case JitterEqual:
					lo, hi, hiOpen = capped/2, capped, capped > 1
				case JitterFull:
					lo, hi = 0, capped
				case JitterDecorrelated:
					lo, hi = c.base, min(c.max, 3*max(prev, c.base))
				}
				if d < lo || d > hi || (hiOpen && d == hi) || d > c.max {
					t.Fatalf("%s base %v max %v attempt %d prev %v: delay %v outside [%v, %v]", j, c.base, c.max, attempt, prev, d, lo, hi)
				}
				prev = d
			}
		}
	}
}

// TestDelayJitterSpreads checks that the jitter kinds randomise as their
// distributions say: means within 2% of the expected value over many draws,
// and the extremes of the range reached.
func TestDelayJitterSpreads(t *testing.T) {
	const draws = 50000
	capped := 1600 * ms // attempt 5 with base 100 ms
	tests := []struct {
		j        Jitter
		mean     float64 // expected mean / capped
		min, max float64 // expected extremes / capped, approached within 1%
	}{
		{JitterEqual, 0.75, 0.5, 1},
		{JitterFull, 0.5, 0, 1},
	}
	for _, tt := range tests {
		b := &BackoffRule{Gate: BackoffGlobal, Base: 100 * ms, Max: 5000 * ms, Jitter: tt.j}
		r := newRand(42)
		var sum float64
		lo, hi := math.Inf(1), math.Inf(-1)
		for range draws {
			f := float64(b.Delay(5, 0, r)) / float64(capped)
			sum += f
			lo, hi = min(lo, f), max(hi, f)
		}
		if mean := sum / draws; math.Abs(mean-tt.mean) > 0.02 {
			t.Errorf("%s: mean %.3f of the capped delay, want %.2f", tt.j, mean, tt.mean)
		}
		if lo > tt.min+0.01 || hi < tt.max-0.01 {
			t.Errorf("%s: draws span [%.3f, %.3f], want about [%.2f, %.2f]", tt.j, lo, hi, tt.min, tt.max)
		}
	}
	// Decorrelated from a previous delay of 1 s with base 100 ms: U[0.1, 3) s,
	// mean 1.55 s.
	b := &BackoffRule{Gate: BackoffGlobal, Base: 100 * ms, Max: 5000 * ms, Jitter: JitterDecorrelated}
	r := newRand(43)
	var sum time.Duration
	for range draws {
		sum += b.Delay(3, time.Second, r)
	}
	if mean := sum / draws; mean < 1500*ms || mean > 1600*ms {
		t.Errorf("decorrelated mean %v, want about 1.55s", mean)
	}
	// Decorrelated near the cap never exceeds it.
	for range draws {
		if d := b.Delay(3, 4*time.Second, r); d > 5000*ms || d < 100*ms {
			t.Fatalf("decorrelated from 4s: %v", d)
		}
	}
}

// TestDelaySeeded: the same seed gives the same delays.
func TestDelaySeeded(t *testing.T) {
	b := &BackoffRule{Gate: BackoffGlobal, Base: 100 * ms, Max: 5000 * ms, Jitter: JitterFull}
	seq := func() []time.Duration {
		r := newRand(9)
		var out []time.Duration
		for a := 1; a <= 10; a++ {
			out = append(out, b.Delay(a, 0, r))
		}
		return out
	}
	first, second := seq(), seq()
	if !slices.Equal(first, second) {
		t.Errorf("same seed, different delays: %v vs %v", first, second)
	}
	if slices.Equal(first, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5000 * ms, 5000 * ms, 5000 * ms, 5000 * ms}) {
		t.Error("full jitter returned the unjittered delays")
	}
}

// TestBackoffApplies checks the scope gate of docs/behaviour.md#backoff-gate, comparing the next
// target with the target that just failed.
func TestBackoffApplies(t *testing.T) {
	cfg, _ := mustParse(t, withPolicy("{}"))
	c := cfg.Compiled()
	gpt, gptMini, claude := 0, 1, 2
	if c.Targets[gptMini] != "openai/gpt-4o-mini" || c.Targets[claude] != "anthropic/claude-3-5-sonnet" {
		t.Fatalf("targets %v", c.Targets)
	}
	tests := []struct {
		gate         BackoffApply
		failed, next int
		want         bool
	}{
		{BackoffSameModel, gpt, gpt, true},
		{BackoffSameModel, gpt, gptMini, false},
		{BackoffSameModel, gpt, claude, false},
		{BackoffSameModel, claude, claude, true},
		{BackoffSameProvider, gpt, gpt, true},
		{BackoffSameProvider, gpt, gptMini, true},
		{BackoffSameProvider, gptMini, gpt, true},
		{BackoffSameProvider, gpt, claude, false},
		{BackoffSameProvider, claude, gptMini, false},
		{BackoffGlobal, gpt, gpt, true},
		{BackoffGlobal, gpt, gptMini, true},
		{BackoffGlobal, gpt, claude, true},
	}
	for _, tt := range tests {
		b := &BackoffRule{Gate: tt.gate, Base: 100 * ms, Max: time.Second}
		if got := b.Applies(c, tt.failed, tt.next); got != tt.want {
			t.Errorf("%s: Applies(%s → %s) = %v, want %v", tt.gate, c.Targets[tt.failed], c.Targets[tt.next], got, tt.want)
		}
	}
}
