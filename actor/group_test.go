package actor

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

func TestGroupCloseWaitsForRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Group
		release := make(chan struct{})
		var finished atomic.Int32
		for range 10 {
			if !g.Go(func() {
				<-release
				finished.Add(1)
			}) {
				t.Fatal("open Group refused Go")
			}
		}
		closed := make(chan struct{})
		go func() {
			g.Close()
			close(closed)
		}()
		synctest.Wait() // everyone is now durably blocked
		if isClosed(closed) {
			t.Fatal("Close returned while goroutines were still running")
		}
		if g.Go(func() { t.Error("refused func ran") }) {
			t.Fatal("Go accepted while Close was waiting")
		}
		close(release)
		<-closed
		if n := finished.Load(); n != 10 {
			t.Fatalf("Close returned with %d/10 goroutines finished", n)
		}
	})
}

func TestGroupRefusesAfterClose(t *testing.T) {
	var g Group
	g.Close()
	if g.Go(func() { t.Error("refused func ran") }) {
		t.Fatal("Go after Close returned true")
	}
	g.Close() // idempotent
	g.Wait()
}

func TestGroupZeroValueWaitOnEmpty(t *testing.T) {
	var g Group
	g.Wait() // nothing tracked: must return at once
	ran := make(chan struct{})
	if !g.Go(func() { close(ran) }) {
		t.Fatal("zero Group refused Go")
	}
	g.Wait()
	if !isClosed(ran) {
		t.Fatal("Wait returned before the tracked goroutine ran")
	}
	// Reusable across idle periods until closed.
	if !g.Go(func() {}) {
		t.Fatal("Group refused Go after going idle")
	}
	g.Close()
}

func TestGroupNestedGoDuringClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var g Group
		closing := make(chan struct{})
		spawned := make(chan bool, 1)
		g.Go(func() {
			<-closing
			// Close is already in progress: the child must be refused, or
			// Close could be kept waiting forever by a chain of spawns.
			spawned <- g.Go(func() {})
		})
		closed := make(chan struct{})
		go func() {
			g.Close()
			close(closed)
		}()
		synctest.Wait()
		close(closing)
		<-closed
		if <-spawned {
			t.Fatal("tracked goroutine could spawn after Close began")
		}
	})
}

func TestGroupConcurrentCloseAndWait(t *testing.T) {
	ctx := testContext(t)
	var g Group
	release := make(chan struct{})
	var finished atomic.Int32
	for range 8 {
		g.Go(func() {
			<-release
			finished.Add(1)
		})
	}
	const waiters = 32
	var wg sync.WaitGroup
	out := make(chan struct{}, waiters)
	for i := range waiters {
		wg.Go(func() {
			if i%2 == 0 {
				g.Close()
			} else {
				g.Wait()
			}
			if finished.Load() != 8 {
				t.Error("Close/Wait returned before all goroutines finished")
			}
			out <- struct{}{}
		})
	}
	close(release)
	for range waiters {
		select {
		case <-out:
		case <-ctx.Done():
			t.Fatalf("Close/Wait hung: %v", ctx.Err())
		}
	}
	wg.Wait()
}
