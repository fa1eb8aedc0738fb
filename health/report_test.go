package health

import (
	"math"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestStripesOverflowWhenFull(t *testing.T) {
	st := newStripes(1, 2)
	for i := range 2 {
		if st.put(report{at: int64(i)}) != putOK {
			t.Fatalf("report %d refused with room left", i)
		}
	}
	if st.put(report{at: 9}) != putFull || st.overflowed() != 1 || st.refused() != 0 {
		t.Fatalf("a full stripe must say so and count an overflow; overflowed = %d", st.overflowed())
	}
	got := st.take(0, make([]report, 0, 2), false)
	if len(got) != 2 || got[0].at != 0 || got[1].at != 1 {
		t.Fatalf("take = %+v", got)
	}
	if st.put(report{at: 3}) != putOK {
		t.Fatal("a drained stripe must accept again")
	}
}

func TestStripesDoorbellOncePerBatch(t *testing.T) {
	st := newStripes(1, 8)
	st.put(report{})
	if len(st.doorbell) != 1 {
		t.Fatal("the first report into an empty stripe must ring")
	}
	<-st.doorbell
	st.put(report{})
	if len(st.doorbell) != 0 {
		t.Fatal("a report into a non-empty stripe must not ring")
	}
	st.take(0, make([]report, 0, 8), false)
	st.put(report{})
	if len(st.doorbell) != 1 {
		t.Fatal("the first report after a take must ring")
	}
}

func TestStripesNeverWait(t *testing.T) {
	st := newStripes(4, 64)
	for i := range st.s {
		st.s[i].mu.Lock()
	}
	// Every stripe is locked: put must give up, not wait.
	if st.put(report{}) != putFull || st.overflowed() != 1 {
		t.Fatal("put must hand the report on when every stripe is busy")
	}
	st.s[2].mu.Unlock()
	if st.put(report{at: 7}) != putOK {
		t.Fatal("put must find the free stripe")
	}
	if len(st.s[2].buf) != 1 {
		t.Fatal("the report must be in the only free stripe")
	}
}

func TestStripesFinalTakeCloses(t *testing.T) {
	st := newStripes(2, 8)
	st.put(report{at: 1})
	var got []report
	for i := range st.s {
		got = append(got, st.take(i, make([]report, 0, 4), true)...)
	}
	if !slices.Equal(got, []report{{at: 1}}) {
		t.Fatalf("final take = %+v", got)
	}
	if st.put(report{at: 2}) != putClosed || st.refused() != 1 {
		t.Fatal("a closed stripe must refuse and count")
	}
}

func TestPendingCoalesces(t *testing.T) {
	rule := latencyRule{minTriggers: 3, window: time.Second, block: time.Minute}
	p := newPending(4, 2, []latencyRule{rule})
	for _, u := range []int64{5, 9, 7} {
		if !p.retryAfter(0, 1, u) {
			t.Fatal("retry-after refused by an open table")
		}
	}
	for _, at := range []int64{30, 10, 20} {
		if !p.latency(1, 2, at, 3, time.Second, time.Minute) {
			t.Fatal("latency event refused by an open table")
		}
	}
	if p.latency(1, 2, 40, 2, time.Second, time.Minute) || p.refused.Load() != 1 {
		t.Fatal("an unknown rule must be refused and counted")
	}
	if !p.dirty() {
		t.Fatal("a written table must be dirty")
	}
	g := p.flip(false)
	if p.dirty() {
		t.Fatal("the new generation must start clean")
	}
	s1, s2 := &g.slots[1], &g.slots[2]
	if s1.retryAfter.Load() != 9 || s1.rule.Load() != 0 {
		t.Fatalf("retry-after slot: until %d rule %d; want the latest deadline 9 and no rule", s1.retryAfter.Load(), s1.rule.Load())
	}
	if s2.rule.Load() != 1 || s2.count.Load() != 3 || s2.lo.Load() != 10 || s2.hi.Load() != 30 {
		t.Fatalf("latency slot: rule %d count %d lo %d hi %d", s2.rule.Load(), s2.count.Load(), s2.lo.Load(), s2.hi.Load())
	}
	if g.slots[0].lo.Load() != math.MaxInt64 {
		t.Fatal("an untouched slot must keep lo at its sentinel")
	}
	// Writes go to the new generation now.
	p.retryAfter(0, 3, 1)
	if g.slots[3].retryAfter.Load() != 0 || p.gen[(p.epoch.Load()>>1)&1].slots[3].retryAfter.Load() != 1 {
		t.Fatal("after a flip reports must land in the other generation")
	}
	p.flip(true)
	if p.retryAfter(0, 0, 1) || p.latency(1, 0, 1, 3, time.Second, time.Minute) || p.refused.Load() != 3 {
		t.Fatal("a closed table must refuse and count")
	}
}

func TestPendingRuleConflict(t *testing.T) {
	a := latencyRule{minTriggers: 2, window: time.Second, block: time.Minute}
	b := latencyRule{minTriggers: 3, window: time.Second, block: time.Minute}
	p := newPending(1, 1, []latencyRule{a, b})
	if !p.latency(1, 0, 1, 2, time.Second, time.Minute) || !p.latency(1, 0, 2, 2, time.Second, time.Minute) {
		t.Fatal("events of one rule must coalesce")
	}
	if p.latency(1, 0, 3, 3, time.Second, time.Minute) || p.refused.Load() != 1 {
		t.Fatal("an event of another rule must be refused while the slot holds the first")
	}
	p.flip(false)
	if !p.latency(1, 0, 4, 3, time.Second, time.Minute) {
		t.Fatal("after a flip the slot of the new generation is free for any rule")
	}
}

// TestPendingFlipWaitsForReporters has reporters write while the actor
// side flips and reads, and checks that the latest deadline of every
// identifier is seen exactly once it was reported: no write falls between
// two generations. Run it with -race.
func TestPendingFlipWaitsForReporters(t *testing.T) {
	const ids, each, workers = 8, 2000, 4
	p := newPending(ids, 4, nil)
	seen := make([]int64, ids)
	read := func(g *pendingGen) {
		for id := range g.slots {
			if u := g.slots[id].retryAfter.Load(); u != 0 {
				seen[id] = max(seen[id], u)
				g.slots[id].retryAfter.Store(0)
			}
		}
		g.dirty.Store(false)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if !p.retryAfter(uint32(w), (w+i)%ids, int64(i+1)) {
					t.Error("an open table refused")
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for open := true; open; {
		select {
		case <-done:
			open = false
		default:
		}
		read(p.flip(false))
	}
	read(p.flip(true))
	read(p.flip(true)) // the other generation too: it must be empty
	for id, u := range seen {
		// The latest deadline any worker wrote for id.
		want := int64(0)
		for w := range workers {
			for i := each - 1; i >= 0; i-- {
				if (w+i)%ids == id {
					want = max(want, int64(i+1))
					break
				}
			}
		}
		if u != want {
			t.Errorf("id %d: latest deadline seen %d, want %d", id, u, want)
		}
	}
}

func TestNextPow2(t *testing.T) {
	for n, want := range map[int]int{-1: 1, 0: 1, 1: 1, 2: 2, 3: 4, 8: 8, 9: 16} {
		if got := nextPow2(n); got != want {
			t.Errorf("nextPow2(%d) = %d, want %d", n, got, want)
		}
	}
}
