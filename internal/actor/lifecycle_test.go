package actor

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

func TestLifecycleStopIdempotentConcurrent(t *testing.T) {
	ctx := testContext(t)
	var l Lifecycle
	var runs atomic.Int32
	var cleanedUp atomic.Bool
	if err := l.Start(func(stop <-chan struct{}) {
		runs.Add(1)
		<-stop
		cleanedUp.Store(true)
	}); err != nil {
		t.Fatalf("Start: %v", err)
	}

	const callers = 64
	gate := make(chan struct{})
	returned := make(chan struct{}, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			<-gate
			l.Stop()
			// Every caller, not just the first, must see the loop finished.
			if !cleanedUp.Load() {
				t.Error("Stop returned before the loop did")
			}
			returned <- struct{}{}
		})
	}
	close(gate)
	for range callers {
		select {
		case <-returned:
		case <-ctx.Done():
			t.Fatalf("Stop callers did not return: %v", ctx.Err())
		}
	}
	wg.Wait()

	l.Stop() // once more after the fact
	if !isClosed(l.Done()) || !isClosed(l.Stopping()) {
		t.Fatal("Done and Stopping must be closed after Stop")
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("loop ran %d times, want 1", n)
	}
}

func TestLifecycleDoneClosesAfterLoopReturns(t *testing.T) {
	ctx := testContext(t)
	var l Lifecycle
	release := make(chan struct{})
	entered := make(chan struct{})
	var returned atomic.Bool
	if err := l.Start(func(<-chan struct{}) {
		close(entered)
		<-release
		returned.Store(true)
	}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitClosed(ctx, t, entered, "loop entered")
	// The loop is parked on release, so Done cannot legitimately be closed.
	if isClosed(l.Done()) {
		t.Fatal("Done closed while the loop is still running")
	}
	close(release)
	waitClosed(ctx, t, l.Done(), "Done")
	if !returned.Load() {
		t.Fatal("Done closed before the loop returned")
	}
	if isClosed(l.Stopping()) {
		t.Fatal("Stopping closed although Stop was never called")
	}
	l.Stop() // loop already gone: must not hang
	if !isClosed(l.Stopping()) {
		t.Fatal("Stopping not closed after Stop")
	}
}

func TestLifecycleLoopGetsStoppingChannel(t *testing.T) {
	var l Lifecycle
	got := make(chan (<-chan struct{}), 1)
	if err := l.Start(func(stop <-chan struct{}) {
		got <- stop
		<-stop
	}); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if stop := <-got; stop != l.Stopping() {
		t.Fatal("loop's stop channel differs from Stopping()")
	}
	l.Stop()
}

func TestLifecycleStartTwice(t *testing.T) {
	var l Lifecycle
	if err := l.Start(func(stop <-chan struct{}) { <-stop }); err != nil {
		t.Fatalf("first Start: %v", err)
	}
	ran := false
	if err := l.Start(func(<-chan struct{}) { ran = true }); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start = %v, want ErrStarted", err)
	}
	l.Stop()
	if err := l.Start(func(<-chan struct{}) { ran = true }); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Stop = %v, want ErrStopped", err)
	}
	if ran {
		t.Fatal("a refused loop was run")
	}
}

func TestLifecycleStartConcurrentOneWins(t *testing.T) {
	var l Lifecycle
	const callers = 32
	var ok, refused atomic.Int32
	var runs atomic.Int32
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			<-gate
			err := l.Start(func(stop <-chan struct{}) {
				runs.Add(1)
				<-stop
			})
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrStarted):
				refused.Add(1)
			default:
				t.Errorf("Start: %v", err)
			}
		})
	}
	close(gate)
	wg.Wait()
	l.Stop()
	if ok.Load() != 1 || refused.Load() != callers-1 || runs.Load() != 1 {
		t.Fatalf("ok=%d refused=%d runs=%d, want 1/%d/1", ok.Load(), refused.Load(), runs.Load(), callers-1)
	}
}

func TestLifecycleStopBeforeStart(t *testing.T) {
	var l Lifecycle
	done, stopping := l.Done(), l.Stopping() // captured before anything happens
	l.Stop()
	if !isClosed(done) || !isClosed(stopping) {
		t.Fatal("Stop on an unstarted Lifecycle must close Done and Stopping")
	}
	if err := l.Start(func(<-chan struct{}) { t.Error("loop ran after Stop") }); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Stop = %v, want ErrStopped", err)
	}
}

func TestLifecycleStopWaitsForSlowLoop(t *testing.T) {
	// synctest lets us prove Stop is still blocked (durably) while the loop
	// drags its feet, without sleeping.
	synctest.Test(t, func(t *testing.T) {
		var l Lifecycle
		finish := make(chan struct{})
		if err := l.Start(func(stop <-chan struct{}) {
			<-stop
			<-finish
		}); err != nil {
			t.Fatalf("Start: %v", err)
		}
		stopped := make(chan struct{})
		go func() {
			l.Stop()
			close(stopped)
		}()
		synctest.Wait()
		if isClosed(stopped) {
			t.Fatal("Stop returned while the loop was still running")
		}
		if !isClosed(l.Stopping()) {
			t.Fatal("Stopping not closed while Stop is waiting")
		}
		close(finish)
		<-stopped
	})
}
