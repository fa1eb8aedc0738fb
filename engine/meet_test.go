package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/reroute-go/reroute/policy"
)

// Where hedging and continuation meet: a hedged request whose delivered
// answer fails after commit is continued from the attempt that was
// delivered, not from the last attempt made.

// TestContinueHedgedRequestListsTheDeliveredAttempt: the primary answers
// at 3 s, beside a hedge started at 2 s that loses; its stream is then cut.
// The continuation's exhaustion lists the cut under the delivered
// attempt's number (1) and target, and the continuation's own attempts
// count on from the request's two.
func TestContinueHedgedRequestListsTheDeliveredAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, hedgeConfig("{delay_ms: 2000}", ""))
		defer e.Close()
		s := newScript(map[string]time.Duration{hPrimary: 3 * time.Second, hFallback: 5 * time.Second}, nil)
		res, err := e.Do(testContext(t), hPrimary, s.call)
		if err != nil || res.Number != 1 || res.Attempts != 2 {
			t.Fatalf("Do = %+v, %v; want the primary, attempt 1 of 2", res, err)
		}
		res.End(time.Second, errCut)
		var numbers []int
		_, err = e.Continue(testContext(t), res, errCut, func(int) bool { return true }, func(_ context.Context, a Attempt) policy.Outcome {
			numbers = append(numbers, a.Number)
			return policy.Outcome{Status: 503}
		})
		ex := asExhausted(t, err)
		if len(ex.Attempts) == 0 || ex.Attempts[0].Target != hPrimary || ex.Attempts[0].Number != 1 {
			t.Fatalf("exhaustion lists %+v first; want the cut of %s, attempt 1", ex.Attempts, hPrimary)
		}
		if len(numbers) == 0 || numbers[0] != 3 {
			t.Fatalf("continuation attempts numbered %v, want from 3 on", numbers)
		}
	})
}

// TestContinuationNeverHedges: a continuation of a hedging policy's
// request whose first attempt takes longer than the hedge delay gets no
// hedge: one call at a time, none marked Hedge, no Hedge event.
func TestContinuationNeverHedges(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hl hookLog
		e := mustEngine(t, hedgeConfig("{delay_ms: 2000}", ""), WithHooks(hl.hooks()))
		defer e.Close()
		res, err := e.Do(testContext(t), hPrimary, newScript(map[string]time.Duration{hPrimary: 0}, nil).call)
		if err != nil || res.Attempts != 1 {
			t.Fatalf("Do = %+v, %v", res, err)
		}
		res.End(time.Second, errCut)
		var running, most atomic.Int32
		var hedges atomic.Int32
		next, err := e.Continue(testContext(t), res, errCut, func(int) bool { return true }, func(ctx context.Context, a Attempt) policy.Outcome {
			if a.Hedge {
				hedges.Add(1)
			}
			n := running.Add(1)
			defer running.Add(-1)
			if n > most.Load() {
				most.Store(n)
			}
			select {
			case <-time.After(5 * time.Second):
				return policy.Outcome{Status: 200}
			case <-ctx.Done():
				return policy.Outcome{Err: ctx.Err()}
			}
		})
		// Which target continues depends on whether the actor has
		// ejected the primary for its cut yet (consecutive_failures: 1);
		// either way the continuation is one attempt, never hedged.
		if err != nil || next.Number != 2 || next.Attempts != 2 {
			t.Fatalf("Continue = %+v, %v; want a continuation as attempt 2", next, err)
		}
		if hedges.Load() != 0 || most.Load() != 1 || hl.count() != 0 {
			t.Fatalf("%d hedge calls, %d calls at once, %d Hedge events: a continuation hedged", hedges.Load(), most.Load(), hl.count())
		}
	})
}

// TestHedgeEventDelayIsTheDelayWaited: with delay_percentile, the Hedge
// event's Delay is the delay the attempt waited, decided when it started
// (max_delay_ms here: no times known yet), even when the percentile has
// changed by the time the hedge starts (other requests' times, 200 ms,
// published meanwhile).
func TestHedgeEventDelayIsTheDelayWaited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hl hookLog
		e := mustEngine(t, hedgeConfig("{delay_percentile: 50, min_delay_ms: 100, max_delay_ms: 5000}", ""), WithHooks(hl.hooks()))
		defer e.Close()
		slow := newScript(map[string]time.Duration{hFallback: 0}, nil)
		done := make(chan Result)
		go func() {
			res, err := e.Do(testContext(t), hPrimary, slow.call)
			if err != nil {
				t.Error(err)
			}
			done <- res
		}()
		synctest.Wait() // its attempt has started, with the delay of no times known
		fast := newScript(map[string]time.Duration{hPrimary: 200 * time.Millisecond}, nil)
		for range policy.HedgeMinSamples {
			if _, err := e.Do(testContext(t), hPrimary, fast.call); err != nil {
				t.Fatal(err)
			}
		}
		res := <-done
		if got := slow.started(hFallback); res.Target != hFallback || len(got) != 1 || got[0] != 5*time.Second {
			t.Fatalf("served by %s, hedge started at %v; want the hedge, at 5s", res.Target, got)
		}
		hl.mu.Lock()
		defer hl.mu.Unlock()
		if len(hl.hedges) != 1 || hl.hedges[0].Delay != 5*time.Second {
			t.Fatalf("hedge events %+v, want one with the delay waited, 5s", hl.hedges)
		}
	})
}

// TestHedgeAndClose: Close waits for a request whose hedge is running, as
// for any Do, and the request ends when its calls do; a hedge whose delay
// ends after Close has begun does not start (Close lets no in-flight
// request start another attempt).
func TestHedgeAndClose(t *testing.T) {
	t.Run("running", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := mustEngine(t, hedgeConfig("{delay_ms: 1000}", ""))
			s := newScript(nil, nil) // both hang until cancelled
			ctx, cancel := context.WithCancel(testContext(t))
			var order []string
			var mu sync.Mutex
			note := func(what string) { mu.Lock(); order = append(order, what); mu.Unlock() }
			done := make(chan error)
			go func() {
				_, err := e.Do(ctx, hPrimary, s.call)
				note("do")
				done <- err
			}()
			time.Sleep(2 * time.Second) // the hedge started at 1s
			closed := make(chan struct{})
			go func() { e.Close(); note("close"); close(closed) }()
			synctest.Wait()
			if len(s.started(hFallback)) != 1 || len(order) != 0 {
				t.Fatalf("hedge calls %v, ended %v: want the hedge running and both Do and Close waiting", s.started(hFallback), order)
			}
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("Do: %v, want context.Canceled", err)
			}
			<-closed
			if len(s.cause(hPrimary)) != 1 || len(s.cause(hFallback)) != 1 || order[0] != "do" {
				t.Fatalf("causes %v %v, order %v: want both calls ended, Do before Close", s.cause(hPrimary), s.cause(hFallback), order)
			}
		})
	})
	t.Run("not started", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var hl hookLog
			e := mustEngine(t, hedgeConfig("{delay_ms: 2000}", ""), WithHooks(hl.hooks()))
			s := newScript(map[string]time.Duration{hPrimary: 3 * time.Second, hFallback: 0}, nil)
			done := make(chan Result)
			go func() {
				res, err := e.Do(testContext(t), hPrimary, s.call)
				if err != nil {
					t.Error(err)
				}
				done <- res
			}()
			time.Sleep(time.Second)
			e.Close() // returns once Do has, at 3s
			res := <-done
			if res.Target != hPrimary || res.Attempts != 1 || hl.count() != 0 || len(s.started(hFallback)) != 0 {
				t.Fatalf("result %+v, %d hedges, fallback calls %v; want the primary alone", res, hl.count(), s.started(hFallback))
			}
		})
	})
}

// TestHedgeTieReportsOneSuccess: the attempt and its hedge answer at the
// same instant, 200 times: whichever is delivered, the hooks hear of
// exactly one success, the delivered attempt's, and of the other as
// abandoned, never as a second success. (The window this guards, the hedge
// claiming the win between the attempt's two looks at the claim, is a few
// instructions wide: the test exercises the tie, it cannot force the
// window.)
func TestHedgeTieReportsOneSuccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hl hookLog
		e := mustEngine(t, hedgeConfig("{delay_ms: 2000}", ""), WithHooks(hl.hooks()))
		defer e.Close()
		s := newScript(map[string]time.Duration{hPrimary: 3 * time.Second, hFallback: time.Second}, nil)
		for i := range 200 {
			hl.mu.Lock()
			hl.attempts = hl.attempts[:0]
			hl.mu.Unlock()
			res, err := e.Do(testContext(t), hPrimary, s.call)
			if err != nil {
				t.Fatal(err)
			}
			hl.mu.Lock()
			var successes, abandoned int
			for _, a := range hl.attempts {
				switch {
				case a.Abandoned:
					abandoned++
				case a.Class == policy.Success:
					successes++
					if a.Number != res.Number {
						t.Fatalf("request %d: a success reported for attempt %d, delivered %d", i, a.Number, res.Number)
					}
				}
			}
			hl.mu.Unlock()
			if successes != 1 || abandoned != 1 {
				t.Fatalf("request %d: %d successes and %d abandoned attempts reported (%+v); want 1 and 1", i, successes, abandoned, hl.attempts)
			}
		}
	})
}
