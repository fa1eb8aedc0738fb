package health

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// burstConfig has n targets, 100 per provider, none with a policy.
func burstConfig(n int) string {
	var b strings.Builder
	b.WriteString("model_providers:\n")
	for i := range n {
		fmt.Fprintf(&b, "  - model: p%d/m%d\n", i/100, i)
	}
	return b.String()
}

// TestBurstRetryAfterNoneLost is the burst that once lost blocks: 3,000
// targets answer 429 with Retry-After: 60 at the same moment, each from its
// own goroutine, far more than the report buffer holds (with the default
// buffer 227 of them used to be dropped). Every one must be blocked after
// Sync.
func TestBurstRetryAfterNoneLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n = 3000
		ctx := testCtx(t)
		c := compiled(t, burstConfig(n))
		a := New(c)
		defer a.Stop()
		now := time.Now().UnixNano()
		until := now + int64(60*time.Second)

		var wg sync.WaitGroup
		start := make(chan struct{})
		for id := range n {
			wg.Go(func() {
				<-start
				if !a.ReportRetryAfter(id, until) {
					t.Errorf("target %d: Retry-After refused", id)
				}
			})
		}
		close(start)
		wg.Wait()
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		snap := a.Snapshot()
		missing := 0
		for id := range n {
			if st := snap.Lookup(id, now); !st.Blocked(now) || st.Until != until || st.Kind != RetryAfter {
				missing++
			}
		}
		if missing != 0 {
			t.Fatalf("%d of %d targets not blocked after Sync", missing, n)
		}
		if a.Dropped() != 0 {
			t.Fatalf("Dropped = %d, want 0", a.Dropped())
		}
		// The actor drains at most twice (the first ring, then after its
		// rest, which fake time only ends once every reporter is done), so
		// at least n-2×DefaultBuffer reports took the pending table: the
		// test covers it.
		if a.Coalesced() < n-2*DefaultBuffer {
			t.Fatalf("Coalesced = %d; the burst must have overflowed the buffer", a.Coalesced())
		}
	})
}

// TestBurstLatencyBlocks is the other burst that used to be lost: 500
// concurrent slow answers on one target whose policy blocks after 375 of
// them within a minute. Most find the buffer full; the block must still be
// created, exactly once.
func TestBurstLatencyBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, m = 500, 375
		ctx := testCtx(t)
		c := compiled(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_high_latency: {threshold_ms: 1000, min_triggers: 375, trigger_window_seconds: 60, strategy: different_provider, max_attempts: 2, block_duration_seconds: 60}
  - model: openai/gpt-4o-mini
`)
		var calls []string
		// A small buffer makes the burst overflow whatever the number of
		// cores (the buffer is split between 2×GOMAXPROCS stripes).
		a := New(c, WithBuffer(64), WithOnBlock(func(name string, k Kind, d time.Duration) {
			calls = append(calls, fmt.Sprint(name, " ", k))
		}))
		defer a.Stop()
		now := time.Now().UnixNano()
		l := c.Rules[0].Latency

		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				// Answers measured a few nanoseconds apart, out of order.
				if !a.ReportLatency(0, now+int64(i%7), l.MinTriggers, l.Window, l.Block) {
					t.Errorf("event %d refused", i)
				}
			})
		}
		close(start)
		wg.Wait()
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		st := a.Snapshot().Lookup(0, now)
		if !st.Blocked(now) || st.Kind != Latency || !st.Latency {
			t.Fatalf("gpt-4o after %d slow answers with min_triggers %d: %+v", n, m, st)
		}
		if lo, hi := now+int64(time.Minute), now+6+int64(time.Minute); st.Until < lo || st.Until > hi {
			t.Fatalf("Until = now+%v, want 60s after an event of the burst", time.Duration(st.Until-now))
		}
		if a.Dropped() != 0 || a.Coalesced() == 0 {
			t.Fatalf("dropped %d, coalesced %d; want 0 and some", a.Dropped(), a.Coalesced())
		}
		if len(calls) != 1 || calls[0] != "openai/gpt-4o latency" {
			t.Fatalf("onBlock calls %q, want one for gpt-4o", calls)
		}
	})
}
