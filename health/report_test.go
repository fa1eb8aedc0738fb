package health

import (
	"slices"
	"testing"
)

func TestStripesDropWhenFull(t *testing.T) {
	st := newStripes(1, 2)
	for i := range 2 {
		if !st.put(report{at: int64(i)}) {
			t.Fatalf("report %d refused with room left", i)
		}
	}
	if st.put(report{at: 9}) || st.dropped() != 1 {
		t.Fatalf("a full stripe must drop and count; dropped = %d", st.dropped())
	}
	got := st.take(0, make([]report, 0, 2), false)
	if len(got) != 2 || got[0].at != 0 || got[1].at != 1 {
		t.Fatalf("take = %+v", got)
	}
	if !st.put(report{at: 3}) {
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
	if st.put(report{}) || st.dropped() != 1 {
		t.Fatal("put must drop when every stripe is busy")
	}
	st.s[2].mu.Unlock()
	if !st.put(report{at: 7}) {
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
	if st.put(report{at: 2}) || st.dropped() != 1 {
		t.Fatal("a closed stripe must refuse and count")
	}
}

func TestNextPow2(t *testing.T) {
	for n, want := range map[int]int{-1: 1, 0: 1, 1: 1, 2: 2, 3: 4, 8: 8, 9: 16} {
		if got := nextPow2(n); got != want {
			t.Errorf("nextPow2(%d) = %d, want %d", n, got, want)
		}
	}
}
