package health

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/reroute-go/reroute/policy"
)

const ttfbConfig = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      hedge: {delay_percentile: 90}
  - model: anthropic/claude-3-5-sonnet
    retry_policy:
      hedge: {delay_percentile: 50}
  - model: mistral/mistral-large
    retry_policy:
      hedge: {delay_ms: 100}
`

// naivePercentile is the nearest-rank percentile of the last TTFBRing
// samples, by the definition.
func naivePercentile(samples []int64, p float64) time.Duration {
	if len(samples) > TTFBRing {
		samples = samples[len(samples)-TTFBRing:]
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	r := int(math.Ceil(p / 100 * float64(len(s))))
	return time.Duration(s[max(r, 1)-1])
}

// TestTTFBWindowMatchesNaive checks the ring and the rank against the
// definition, over random samples and counts on both sides of the ring's
// size, for every configured percentile.
func TestTTFBWindowMatchesNaive(t *testing.T) {
	c := compiled(t, ttfbConfig)
	if !slices.Equal(c.TTFBPercentiles, []float64{90, 50}) {
		t.Fatalf("percentiles %v", c.TTFBPercentiles)
	}
	w := NewTTFBWindow(c)
	rnd := rand.New(rand.NewPCG(1, 2))
	var seen [3][]int64
	for round := range 40 {
		for range rnd.IntN(20) + 1 {
			tg := rnd.IntN(3)
			d := int64(rnd.IntN(5000)+1) * int64(time.Millisecond)
			w.Observe(tg, time.Duration(d))
			seen[tg] = append(seen[tg], d)
		}
		tb := w.Table()
		for tg := range 3 {
			for k, p := range c.TTFBPercentiles {
				got, ok := tb.Percentile(tg, k)
				if len(seen[tg]) == 0 {
					if got != 0 || ok {
						t.Fatalf("round %d: target %d without samples: %v %v", round, tg, got, ok)
					}
					continue
				}
				if want := naivePercentile(seen[tg], p); got != want {
					t.Fatalf("round %d: target %d p%g of %d samples = %v, want %v", round, tg, p, len(seen[tg]), got, want)
				}
				if wantOK := len(seen[tg]) >= policy.HedgeMinSamples; ok != wantOK {
					t.Fatalf("round %d: ok = %v with %d samples", round, ok, len(seen[tg]))
				}
			}
		}
	}
	if tb := w.Table(); tb != w.Table() {
		t.Fatal("a table without new samples must be the same one")
	}
}

func TestTTFBWindowBounds(t *testing.T) {
	var w *TTFBWindow
	w.Observe(0, time.Second) // a nil window keeps nothing and does not panic
	if w.Table() != nil {
		t.Fatal("a nil window has no table")
	}
	var tb *TTFBTable
	if _, ok := tb.Percentile(0, 0); ok {
		t.Fatal("a nil table knows nothing")
	}
	if NewTTFBWindow(testCompiled(t)) != nil {
		t.Fatal("a configuration without a percentile hedge needs no window")
	}
	w = NewTTFBWindow(compiled(t, ttfbConfig))
	w.Observe(-1, time.Second)
	w.Observe(99, time.Second)
	w.Observe(0, 0)
	w.Observe(0, -time.Second)
	if d, _ := w.Table().Percentile(0, 0); d != 0 {
		t.Fatalf("ignored samples were kept: %v", d)
	}
	if _, ok := w.Table().Percentile(0, 5); ok {
		t.Fatal("a percentile out of range")
	}
}

// TestActorTTFB: samples reported to the actor are published by Sync, and
// reading them is a table lookup.
func TestActorTTFB(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		a := New(compiled(t, ttfbConfig))
		defer a.Stop()
		for i := range 20 {
			if !a.ReportTTFB(0, time.Duration(i+1)*100*time.Millisecond) {
				t.Fatal("sample refused")
			}
		}
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		// Nearest rank of p90 among 100 ms … 2 s: the 18th, 1.8 s.
		if d, ok := a.TTFB(0, 0); d != 1800*time.Millisecond || !ok {
			t.Fatalf("p90 = %v %v, want 1.8s true", d, ok)
		}
		if d, ok := a.TTFB(0, 1); d != time.Second || !ok {
			t.Fatalf("p50 = %v %v, want 1s true", d, ok)
		}
		if _, ok := a.TTFB(1, 0); ok {
			t.Fatal("a target without samples")
		}
		a.Stop()
		if a.ReportTTFB(0, time.Second) {
			t.Fatal("a stopped actor took a sample")
		}
		if a.TTFBDropped() != 1 {
			t.Fatalf("dropped %d, want 1", a.TTFBDropped())
		}
	})
	a := New(testCompiled(t))
	defer a.Stop()
	if a.ReportTTFB(0, time.Second) {
		t.Fatal("an actor without percentiles took a sample")
	}
	if _, ok := a.TTFB(0, 0); ok {
		t.Fatal("an actor without percentiles answered")
	}
}
