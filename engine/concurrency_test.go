package engine

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/reroute-go/reroute/policy"
)

// Do from many goroutines at once, and Close while requests are in flight.
// Run with -race. Inside synctest bubbles an upstream "takes time" with
// time.Sleep, which is virtual, and synctest.Wait is the barrier.

const concurrentConfig = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      on_status_codes: [{codes: [429, 500, 503], strategy: different_provider, max_attempts: 3}]
      retry_after_handling: {scope: model, apply_to: global}
  - model: anthropic/claude-3-5-sonnet
    retry_policy:
      on_status_codes: [{codes: [429, 500, 503], strategy: different_provider, max_attempts: 3}]
      backoff: {apply_to: global, base_ms: 1, max_ms: 4, jitter: full}
  - model: mistral/mistral-large
    retry_policy: {default_strategy: different_provider, default_max_attempts: 3}
engine: {retry_budget: {enabled: false}}
`

// concurrentUpstream answers by the target's call number: a mix of 200,
// 429 with a short Retry-After (a global block that comes and goes), 500
// and 503, each after a virtual millisecond. It counts what it answered.
type concurrentUpstream struct {
	calls, ok, failed [3]atomic.Int64 // by target index
}

func (u *concurrentUpstream) call(_ context.Context, a Attempt) policy.Outcome {
	n := u.calls[a.Index].Add(1)
	time.Sleep(time.Millisecond)
	var o policy.Outcome
	switch {
	case a.Index == 0 && n%5 == 1:
		o = policy.Outcome{Status: 429, Header: http.Header{"Retry-After": {"0.05"}}}
	case a.Index == 0 && n%5 == 2, a.Index == 1 && n%4 == 0:
		o = policy.Outcome{Status: 503}
	case a.Index == 2 && n%6 == 0:
		o = policy.Outcome{Status: 500}
	default:
		o = policy.Outcome{Status: 200}
	}
	if o.Status == 200 {
		u.ok[a.Index].Add(1)
	} else {
		u.failed[a.Index].Add(1)
	}
	return o
}

// The per-target counts equal what the upstream saw, and every request's
// answer accounts for exactly the calls it made.
func TestConcurrentDoCountsMatchCalls(t *testing.T) {
	const goroutines, requests = 64, 200
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, concurrentConfig)
		up := &concurrentUpstream{}
		ctx := testContext(t)
		targets := e.Compiled().Targets
		var made, accounted, results, exhausted atomic.Int64
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for r := range requests {
					var mine int
					call := func(ctx context.Context, a Attempt) policy.Outcome {
						mine++
						made.Add(1)
						return up.call(ctx, a)
					}
					res, err := e.Do(ctx, targets[(g+r)%len(targets)], call)
					var ex *ExhaustedError
					switch {
					case err == nil && res.Target != "":
						results.Add(1)
						accounted.Add(int64(res.Attempts))
						if res.Attempts != mine {
							t.Errorf("Result.Attempts %d, %d calls made", res.Attempts, mine)
						}
					case errors.As(err, &ex) && res.Target == "":
						exhausted.Add(1)
						accounted.Add(int64(len(ex.Attempts)))
						if len(ex.Attempts) != mine {
							t.Errorf("%d attempts listed, %d calls made", len(ex.Attempts), mine)
						}
					default:
						t.Errorf("Do returned %+v, %v", res, err)
					}
				}
			})
		}
		wg.Wait()
		if n := results.Load() + exhausted.Load(); n != goroutines*requests {
			t.Errorf("%d requests answered, want %d", n, goroutines*requests)
		}
		if made.Load() != accounted.Load() {
			t.Errorf("%d calls made, %d accounted for by the answers", made.Load(), accounted.Load())
		}
		var total int64
		for i, target := range targets {
			want := Counts{Attempts: up.calls[i].Load(), Successes: up.ok[i].Load(), Failures: up.failed[i].Load()}
			if got := e.Counts(target); got != want {
				t.Errorf("%s: counts %+v, upstream saw %+v", target, got, want)
			}
			total += want.Attempts
		}
		if total != made.Load() {
			t.Errorf("upstream saw %d calls, %d made", total, made.Load())
		}
		if exhausted.Load() == 0 || total == goroutines*requests {
			t.Errorf("the script should produce exhaustions and retries: %d exhausted, %d calls", exhausted.Load(), total)
		}
	})
}

// Close while traffic runs: Close returns after every Do that began before
// it; once Close has returned no attempt starts, and a Do that returns
// later returns ErrClosed without having called anything. Several
// goroutines close at once.
func TestCloseDuringTraffic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, err := New(mustConfig(t, concurrentConfig))
		if err != nil {
			t.Fatal(err)
		}
		up := &concurrentUpstream{}
		ctx := testContext(t)
		targets := e.Compiled().Targets

		// seq orders the events that matter: call entries, Do returns
		// and Close returns.
		var seq, lastCall atomic.Int64
		type ret struct {
			seq   int64
			calls int
			err   error
			res   Result
		}
		rets := make(chan ret, 1<<16)
		var wg sync.WaitGroup
		for g := range 32 {
			wg.Go(func() {
				for r := 0; ; r++ {
					var mine int
					call := func(ctx context.Context, a Attempt) policy.Outcome {
						mine++
						lastCall.Store(seq.Add(1))
						return up.call(ctx, a)
					}
					res, err := e.Do(ctx, targets[(g+r)%len(targets)], call)
					rets <- ret{seq.Add(1), mine, err, res}
					if errors.Is(err, ErrClosed) {
						return
					}
				}
			})
		}
		time.Sleep(20 * time.Millisecond) // traffic runs, in virtual time
		closeEnds := make(chan int64, 3)
		var closers sync.WaitGroup
		for range 3 {
			closers.Go(func() {
				e.Close()
				closeEnds <- seq.Add(1)
			})
		}
		closers.Wait()
		wg.Wait()
		close(rets)
		close(closeEnds)

		firstClose := int64(1 << 62)
		for s := range closeEnds {
			firstClose = min(firstClose, s)
		}
		if lastCall.Load() > firstClose {
			t.Errorf("an attempt started (seq %d) after Close returned (seq %d)", lastCall.Load(), firstClose)
		}
		var n, closed int
		for r := range rets {
			n++
			var ex *ExhaustedError
			switch {
			case r.err == nil && r.res.Target != "":
			case errors.As(r.err, &ex) && r.res.Target == "":
			case errors.Is(r.err, ErrClosed) && r.res.Target == "":
				closed++
			default:
				t.Errorf("Do returned %+v, %v", r.res, r.err)
			}
			if r.seq > firstClose && (!errors.Is(r.err, ErrClosed) || r.calls != 0) {
				t.Errorf("a Do returned after Close with %v after %d calls, want ErrClosed and none", r.err, r.calls)
			}
		}
		if closed != 32 || n <= 32 {
			t.Errorf("%d requests, %d ended by Close; want traffic before Close and 32 ended by it", n, closed)
		}
		for i, target := range targets {
			if got, want := e.Counts(target).Attempts, up.calls[i].Load(); got != want {
				t.Errorf("%s: %d attempts counted, upstream saw %d", target, got, want)
			}
		}
	})
}

// Close waits for attempts in flight, from every goroutine that calls it;
// the answers in flight are delivered, and no further attempt starts.
func TestCloseWaitsForAttemptsInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, err := New(mustConfig(t, concurrentConfig))
		if err != nil {
			t.Fatal(err)
		}
		ctx := testContext(t)
		release := make(chan struct{})
		var calls atomic.Int64
		call := func(ctx context.Context, a Attempt) policy.Outcome {
			calls.Add(1)
			<-release
			if a.Index == 0 {
				return policy.Outcome{Status: 503} // would fail over to claude
			}
			return policy.Outcome{Status: 200}
		}
		dos := make(chan doResult, 4)
		for i := range 4 {
			go func() {
				res, err := e.Do(ctx, e.Compiled().Targets[i%2], call)
				dos <- doResult{res, err}
			}()
		}
		synctest.Wait() // four attempts in flight

		var closed atomic.Int32
		for range 3 {
			go func() {
				e.Close()
				closed.Add(1)
			}()
		}
		synctest.Wait()
		if n := closed.Load(); n != 0 {
			t.Errorf("%d Close calls returned while attempts were in flight", n)
		}
		if _, err := e.Do(ctx, gpt, call); !errors.Is(err, ErrClosed) {
			t.Errorf("Do during Close: %v, want ErrClosed", err)
		}

		close(release)
		synctest.Wait()
		if n := closed.Load(); n != 3 {
			t.Errorf("%d of 3 Close calls returned after the attempts ended", n)
		}
		var served, ended int
		for range 4 {
			r := <-dos
			switch {
			case r.err == nil && r.res.Target == claude && r.res.Attempts == 1:
				served++
			case errors.Is(r.err, ErrClosed):
				ended++
			default:
				t.Errorf("Do returned %+v, %v", r.res, r.err)
			}
		}
		if served != 2 || ended != 2 || calls.Load() != 4 {
			t.Errorf("%d served, %d ended by Close, %d calls; want 2, 2, 4", served, ended, calls.Load())
		}
		if c := e.Counts(claude); c.Attempts != 2 {
			t.Errorf("claude counts %+v, want the 2 attempts made", c)
		}
	})
}

// A wait in progress ends at once when the engine closes: Do returns
// ErrClosed, and the attempt it was waiting for is neither made nor
// counted.
func TestCloseInterruptsWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e, err := New(mustConfig(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_status_codes: [{codes: [503], strategy: same_model, max_attempts: 3}]
      backoff: {apply_to: same_model, base_ms: 10000, max_ms: 20000, jitter: false}
`))
		if err != nil {
			t.Fatal(err)
		}
		up := newUpstreams(map[string][]step{gpt: {{status: 503}}})
		done := make(chan doResult, 1)
		start := time.Now()
		go func() {
			res, err := e.Do(testContext(t), gpt, up.call)
			done <- doResult{res, err}
		}()
		synctest.Wait() // the first attempt failed; Do waits 10 s
		time.Sleep(3 * time.Second)
		e.Close()
		r := <-done
		if !errors.Is(r.err, ErrClosed) || r.res.Target != "" {
			t.Fatalf("Do: %+v, %v; want ErrClosed", r.res, r.err)
		}
		if took := time.Since(start); took != 3*time.Second {
			t.Errorf("Do returned after %v, want 3s: when Close was called", took)
		}
		if n := up.count(gpt); n != 1 {
			t.Errorf("%d calls, want 1", n)
		}
		if c := e.Counts(gpt); c != (Counts{Attempts: 1, Failures: 1}) {
			t.Errorf("counts %+v, want the one attempt made", c)
		}
	})
}

// Counts count the attempts made, not the one a request had decided on
// when its context ended; an attempt its context cut is a failure.
func TestCountsMatchAttemptsMade(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_status_codes: [{codes: [503], strategy: same_model, max_attempts: 3}]
      backoff: {apply_to: same_model, base_ms: 10000, max_ms: 20000, jitter: false}
`)
		up := newUpstreams(map[string][]step{gpt: {{status: 503}}})

		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		cancel()
		if _, err := e.Do(ctx, gpt, up.call); !errors.Is(err, context.Canceled) {
			t.Fatalf("Do with a cancelled context: %v", err)
		}
		if c := e.Counts(gpt); c != (Counts{}) || up.count(gpt) != 0 {
			t.Errorf("after a cancelled request: counts %+v, %d calls; want none", c, up.count(gpt))
		}

		ctx, cancel = context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		go func() {
			time.Sleep(time.Second) // during the 10 s backoff
			cancel()
		}()
		if _, err := e.Do(ctx, gpt, up.call); !errors.Is(err, context.Canceled) {
			t.Fatalf("Do cancelled during its wait: %v", err)
		}
		if c := e.Counts(gpt); c != (Counts{Attempts: 1, Failures: 1}) || up.count(gpt) != 1 {
			t.Errorf("after a request cancelled in its wait: counts %+v, %d calls; want the one attempt made", c, up.count(gpt))
		}

		hang := newUpstreams(map[string][]step{gpt: {{hang: true}}})
		ctx, cancel = context.WithTimeout(context.Background(), time.Hour)
		go func() {
			time.Sleep(time.Second) // during the attempt
			cancel()
		}()
		if _, err := e.Do(ctx, gpt, hang.call); !errors.Is(err, context.Canceled) {
			t.Fatalf("Do cancelled during its attempt: %v", err)
		}
		ctx, cancel = context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := e.Do(ctx, gpt, hang.call); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Do cut by its deadline during its attempt: %v", err)
		}
		if c := e.Counts(gpt); c != (Counts{Attempts: 3, Failures: 3}) || hang.count(gpt) != 2 {
			t.Errorf("after two attempts cut by their request's context: counts %+v, %d calls; want 3 attempts, 3 failures in all", c, hang.count(gpt))
		}
	})
}
