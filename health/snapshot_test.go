package health

import (
	"testing"
	"time"
)

func TestSnapshotNilAndZero(t *testing.T) {
	for _, s := range []*Snapshot{nil, {}} {
		if s.Lookup(0, t0).Blocked(t0) || !s.Clear(0) || s.Len() != 0 {
			t.Fatalf("%v: a snapshot without targets must answer clear and not blocked", s)
		}
	}
}

func TestSnapshotClear(t *testing.T) {
	st := NewState(testCompiled(t))
	if s := st.Snapshot(); !s.Clear(tGPT4o) || s.Len() != 4 {
		t.Fatal("a new state must be clear for every target")
	}
	st.BlockRetryAfter(pOpenAI, t0+10*sec)
	s := st.Snapshot()
	for tg, want := range map[int]bool{tGPT4o: false, tMini: false, tClaude: true, tMistral: true, -1: true, 4: true} {
		if got := s.Clear(tg); got != want {
			t.Errorf("Clear(%d) = %v, want %v", tg, got, want)
		}
	}
	// Ended but not dropped: not blocked, not clear either.
	if s.Lookup(tGPT4o, t0+10*sec).Blocked(t0+10*sec) || s.Clear(tGPT4o) {
		t.Fatal("an ended block must not block and must keep Clear false until dropped")
	}
	st.Expire(t0 + 10*sec)
	if !st.Snapshot().Clear(tGPT4o) {
		t.Fatal("Clear must be true again once the block is dropped")
	}
	if s.Clear(tGPT4o) {
		t.Fatal("a published snapshot must never change")
	}
}

func TestSnapshotLookupAllocatesNothing(t *testing.T) {
	st := NewState(testCompiled(t))
	st.LatencyEvent(tClaude, t0, 1, time.Second, time.Minute)
	s := st.Snapshot()
	var blocked bool
	if n := testing.AllocsPerRun(100, func() { blocked = s.Lookup(tClaude, t0).Blocked(t0) }); n != 0 {
		t.Fatalf("Lookup allocates %v times", n)
	}
	if !blocked {
		t.Fatal("claude must be blocked")
	}
}
