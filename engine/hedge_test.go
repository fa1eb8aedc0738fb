package engine

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/reroute-go/reroute/policy"
)

const (
	hPrimary  = "openai/gpt-4o"
	hFallback = "anthropic/claude-3-5-sonnet"
)

// hedgeConfig has openai/gpt-4o hedged to anthropic/claude-3-5-sonnet
// with the given hedge block and extra policy keys.
func hedgeConfig(hedge, extra string) string {
	return `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      hedge: ` + hedge + `
` + extra + `
  - model: anthropic/claude-3-5-sonnet
  - model: mistral/mistral-large
engine:
  passive_health: {consecutive_failures: 1}
`
}

// script is a fake upstream per target for hedging tests, in the fake time
// of a synctest bubble: each call waits its target's delay (or until its
// context ends) and answers its status; it records when each call started
// and the cause its context ended with.
type script struct {
	mu     sync.Mutex
	t0     time.Time
	after  map[string]time.Duration // how long before the answer; absent: hang
	status map[string]int
	starts map[string][]time.Duration
	causes map[string][]error
}

func newScript(after map[string]time.Duration, status map[string]int) *script {
	return &script{t0: time.Now(), after: after, status: status, starts: map[string][]time.Duration{}, causes: map[string][]error{}}
}

func (s *script) call(ctx context.Context, a Attempt) policy.Outcome {
	s.mu.Lock()
	s.starts[a.Target] = append(s.starts[a.Target], time.Since(s.t0))
	d, ok := s.after[a.Target]
	st := s.status[a.Target]
	s.mu.Unlock()
	if st == 0 {
		st = 200
	}
	var wait <-chan time.Time
	if ok {
		t := time.NewTimer(d)
		defer t.Stop()
		wait = t.C
	}
	select {
	case <-wait:
		return policy.Outcome{Status: st}
	case <-ctx.Done():
		s.mu.Lock()
		s.causes[a.Target] = append(s.causes[a.Target], context.Cause(ctx))
		s.mu.Unlock()
		return policy.Outcome{Err: ctx.Err()}
	}
}

func (s *script) started(target string) []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.starts[target]...)
}

func (s *script) cause(target string) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.causes[target]...)
}

// hooks records the hedge and attempt events.
type hookLog struct {
	mu       sync.Mutex
	hedges   []HedgeEvent
	attempts []AttemptEvent
}

func (h *hookLog) hooks() Hooks {
	return Hooks{
		Hedge:   func(e HedgeEvent) { h.mu.Lock(); h.hedges = append(h.hedges, e); h.mu.Unlock() },
		Attempt: func(e AttemptEvent) { h.mu.Lock(); h.attempts = append(h.attempts, e); h.mu.Unlock() },
	}
}

func (h *hookLog) count() int { h.mu.Lock(); defer h.mu.Unlock(); return len(h.hedges) }

// TestHedgeStartsAtDelayAndWins: the primary sends nothing; the hedge
// starts exactly at its delay, answers at once and is delivered; the
// primary's call is cancelled with ErrAbandoned, and its outcome is neither
// a success nor a failure of its target.
func TestHedgeStartsAtDelayAndWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hl hookLog
		e := mustEngine(t, hedgeConfig("{delay_ms: 2000}", ""), WithHooks(hl.hooks()))
		defer e.Close()
		s := newScript(map[string]time.Duration{hFallback: 0}, nil)
		start := time.Now()
		res, err := e.Do(testContext(t), hPrimary, s.call)
		if err != nil {
			t.Fatal(err)
		}
		if res.Target != hFallback || res.Number != 2 || res.Attempts != 2 {
			t.Fatalf("result %s number %d attempts %d, want %s 2 2", res.Target, res.Number, res.Attempts, hFallback)
		}
		if el := time.Since(start); el != 2*time.Second {
			t.Fatalf("answered after %v, want 2s", el)
		}
		if got := s.started(hFallback); len(got) != 1 || got[0] != 2*time.Second {
			t.Fatalf("hedge started at %v, want [2s]", got)
		}
		if c := s.cause(hPrimary); len(c) != 1 || !errors.Is(c[0], ErrAbandoned) {
			t.Fatalf("primary's context ended with %v, want ErrAbandoned", c)
		}
		p := e.Compiled()
		ti, _ := p.Lookup(hPrimary)
		if c := e.Counts(hPrimary); c.Failures != 0 || c.Successes != 0 {
			t.Fatalf("the abandoned attempt was counted: %+v", c)
		}
		if err := e.Actor().Sync(testContext(t)); err != nil {
			t.Fatal(err)
		}
		if st := e.Actor().Snapshot().Lookup(ti, time.Now().UnixNano()); st.Ejected {
			t.Fatal("the abandoned primary was ejected: it counted as a failure")
		}
		if len(hl.hedges) != 1 || hl.hedges[0] != (HedgeEvent{From: hPrimary, To: hFallback, FromIndex: ti, ToIndex: 1, Number: 2, Delay: 2 * time.Second}) {
			t.Fatalf("hedge events %+v", hl.hedges)
		}
		var abandoned int
		for _, a := range hl.attempts {
			if a.Abandoned {
				abandoned++
				if a.Target != hPrimary || a.Number != 1 {
					t.Fatalf("abandoned attempt %+v", a)
				}
			}
		}
		if abandoned != 1 {
			t.Fatalf("%d abandoned attempts, want 1: %+v", abandoned, hl.attempts)
		}
	})
}

// TestHedgeLoses: the primary answers at 3 s, after its hedge started at
// 2 s and before the hedge answers: the primary is delivered and the
// hedge's call cancelled.
func TestHedgeLoses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, hedgeConfig("{delay_ms: 2000}", ""))
		defer e.Close()
		s := newScript(map[string]time.Duration{hPrimary: 3 * time.Second, hFallback: 5 * time.Second}, nil)
		res, err := e.Do(testContext(t), hPrimary, s.call)
		if err != nil {
			t.Fatal(err)
		}
		if res.Target != hPrimary || res.Number != 1 || res.Attempts != 2 {
			t.Fatalf("result %s number %d attempts %d, want %s 1 2", res.Target, res.Number, res.Attempts, hPrimary)
		}
		if c := s.cause(hFallback); len(c) != 1 || !errors.Is(c[0], ErrAbandoned) {
			t.Fatalf("hedge's context ended with %v, want ErrAbandoned", c)
		}
		if c := e.Counts(hFallback); c.Failures != 0 || c.Successes != 0 {
			t.Fatalf("the abandoned hedge was counted: %+v", c)
		}
	})
}

// TestHedgeNotNeeded: a primary that answers before the delay gets no
// hedge, and nothing else is called.
func TestHedgeNotNeeded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hl hookLog
		e := mustEngine(t, hedgeConfig("{delay_ms: 2000}", ""), WithHooks(hl.hooks()))
		defer e.Close()
		s := newScript(map[string]time.Duration{hPrimary: 1999 * time.Millisecond, hFallback: 0}, nil)
		res, err := e.Do(testContext(t), hPrimary, s.call)
		if err != nil || res.Target != hPrimary || res.Attempts != 1 {
			t.Fatalf("%+v %v", res, err)
		}
		if n := len(s.started(hFallback)); n != 0 || hl.count() != 0 {
			t.Fatalf("a hedge started: %d calls, %d events", n, hl.count())
		}
	})
}

// TestHedgeLoserLatencyEvent: an abandoned primary slower than
// on_high_latency's threshold is a latency event (here a block), never a
// failure.
func TestHedgeLoserLatencyEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, hedgeConfig("{delay_ms: 2000}",
			"      on_high_latency: {threshold_ms: 1000, min_triggers: 1, strategy: different_provider, max_attempts: 2, block_duration_seconds: 60}"))
		defer e.Close()
		s := newScript(map[string]time.Duration{hFallback: 0}, nil)
		if res, err := e.Do(testContext(t), hPrimary, s.call); err != nil || res.Target != hFallback {
			t.Fatalf("%+v %v", res, err)
		}
		blocks, err := e.Actor().Blocks(testContext(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(blocks) != 1 || blocks[0].Name != hPrimary || blocks[0].Kind.String() != "latency" {
			t.Fatalf("blocks %+v, want a latency block of %s", blocks, hPrimary)
		}
		if c := e.Counts(hPrimary); c.Failures != 0 {
			t.Fatalf("the slow loser counted as a failure: %+v", c)
		}
		// Under the threshold: no event.
		e2 := mustEngine(t, hedgeConfig("{delay_ms: 500}",
			"      on_high_latency: {threshold_ms: 1000, min_triggers: 1, strategy: different_provider, max_attempts: 2, block_duration_seconds: 60}"))
		defer e2.Close()
		if res, err := e2.Do(testContext(t), hPrimary, newScript(map[string]time.Duration{hFallback: 0}, nil).call); err != nil || res.Target != hFallback {
			t.Fatalf("%+v %v", res, err)
		}
		if blocks, _ := e2.Actor().Blocks(testContext(t)); len(blocks) != 0 {
			t.Fatalf("a loser under the threshold made blocks %+v", blocks)
		}
	})
}

// TestHedgePrimaryFailsDuringHedge: the primary's 500 while the hedge runs
// is a failure of the primary; the hedge goes on as the request's attempt
// and is delivered.
func TestHedgePrimaryFailsDuringHedge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, hedgeConfig("{delay_ms: 2000}", ""))
		defer e.Close()
		s := newScript(map[string]time.Duration{hPrimary: 3 * time.Second, hFallback: 3 * time.Second}, map[string]int{hPrimary: 500})
		start := time.Now()
		res, err := e.Do(testContext(t), hPrimary, s.call)
		if err != nil {
			t.Fatal(err)
		}
		if res.Target != hFallback || res.Number != 2 || res.Attempts != 2 || time.Since(start) != 5*time.Second {
			t.Fatalf("result %s number %d attempts %d after %v", res.Target, res.Number, res.Attempts, time.Since(start))
		}
		if c := e.Counts(hPrimary); c.Failures != 1 {
			t.Fatalf("primary counts %+v, want its failure", c)
		}
		if len(s.cause(hFallback)) != 0 {
			t.Fatal("the hedge was cancelled")
		}
		if n := len(s.started(hPrimary)) + len(s.started(hFallback)); n != 2 {
			t.Fatalf("%d calls, want 2", n)
		}
	})
}

// TestHedgeBothFail: both fail; the request goes on by the policy from the
// hedge's failure, to the third target, and its attempts count both.
func TestHedgeBothFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, hedgeConfig("{delay_ms: 2000}", "      default_max_attempts: 3\n      unlisted_failover: any"))
		defer e.Close()
		s := newScript(map[string]time.Duration{hPrimary: 3 * time.Second, hFallback: 500 * time.Millisecond, "mistral/mistral-large": 0},
			map[string]int{hPrimary: 503, hFallback: 503})
		res, err := e.Do(testContext(t), hPrimary, s.call)
		if err != nil {
			t.Fatal(err)
		}
		if res.Target != "mistral/mistral-large" || res.Number != 3 || res.Attempts != 3 {
			t.Fatalf("result %s number %d attempts %d", res.Target, res.Number, res.Attempts)
		}
	})
}

// TestHedgeBudget: budget_percent 0 with 0.2 per second over the 10 s
// window allows two hedges; the third request runs alone.
func TestHedgeBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hl hookLog
		e := mustEngine(t, hedgeConfig("{delay_ms: 1000, budget_percent: 0, budget_min_per_second: 0.2}", ""), WithHooks(hl.hooks()))
		defer e.Close()
		s := newScript(map[string]time.Duration{hPrimary: 1500 * time.Millisecond}, nil)
		for i := range 3 {
			res, err := e.Do(testContext(t), hPrimary, s.call)
			if err != nil || res.Target != hPrimary {
				t.Fatalf("request %d: %+v %v", i, res, err)
			}
			want := 2
			if i == 2 {
				want = 1
			}
			if res.Attempts != want {
				t.Fatalf("request %d: %d attempts, want %d", i, res.Attempts, want)
			}
		}
		if hl.count() != 2 || len(s.started(hFallback)) != 2 {
			t.Fatalf("%d hedges, %d hedge calls; want 2", hl.count(), len(s.started(hFallback)))
		}
	})
}

// TestHedgeBounds: the deadline and max_attempts bound hedges.
func TestHedgeBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The delay would end past the deadline: no hedge is armed.
		e := mustEngine(t, hedgeConfig("{delay_ms: 2000}", ""))
		defer e.Close()
		s := newScript(map[string]time.Duration{hFallback: 0}, nil)
		ctx, cancel := context.WithTimeout(testContext(t), 1500*time.Millisecond)
		defer cancel()
		_, err := e.Do(ctx, hPrimary, s.call)
		if ex := asExhausted(t, err); ex.Reason != ReasonDeadline {
			t.Fatalf("reason %s", ex.Reason)
		}
		if len(s.started(hFallback)) != 0 {
			t.Fatal("a hedge started past the deadline")
		}
		// default_max_attempts: 1 leaves no attempt for a hedge.
		e1 := mustEngine(t, hedgeConfig("{delay_ms: 2000}", "      default_max_attempts: 1"))
		defer e1.Close()
		s = newScript(map[string]time.Duration{hPrimary: 3 * time.Second, hFallback: 0}, nil)
		res, err := e1.Do(testContext(t), hPrimary, s.call)
		if err != nil || res.Target != hPrimary || res.Attempts != 1 || len(s.started(hFallback)) != 0 {
			t.Fatalf("%+v %v, hedge calls %d", res, err, len(s.started(hFallback)))
		}
		// A hedge whose only candidate is blocked does not start.
		e2 := mustEngine(t, hedgeConfig("{delay_ms: 2000}", "      unlisted_failover: none"))
		defer e2.Close()
		e2.Actor().ReportRetryAfter(1, time.Now().Add(time.Minute).UnixNano())
		if err := e2.Actor().Sync(testContext(t)); err != nil {
			t.Fatal(err)
		}
		s = newScript(map[string]time.Duration{hPrimary: 3 * time.Second, hFallback: 0}, nil)
		if res, err := e2.Do(testContext(t), hPrimary, s.call); err != nil || res.Attempts != 1 || len(s.started(hFallback)) != 0 {
			t.Fatalf("%+v %v", res, err)
		}
	})
}

// TestHedgeCancel: the client cancelling during the race ends both calls
// and the request with the context's error.
func TestHedgeCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, hedgeConfig("{delay_ms: 1000}", ""))
		defer e.Close()
		s := newScript(nil, nil) // both hang
		ctx, cancel := context.WithCancel(testContext(t))
		time.AfterFunc(3*time.Second, cancel)
		_, err := e.Do(ctx, hPrimary, s.call)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want context.Canceled", err)
		}
		if len(s.cause(hPrimary)) != 1 || len(s.cause(hFallback)) != 1 {
			t.Fatal("a call was not ended")
		}
	})
}

// TestHedgePercentileDelay: with delay_percentile the delay is max_delay_ms
// until enough times to first token are known, then their percentile.
func TestHedgePercentileDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hl hookLog
		e := mustEngine(t, hedgeConfig("{delay_percentile: 50, min_delay_ms: 100, max_delay_ms: 5000}", ""), WithHooks(hl.hooks()))
		defer e.Close()
		fast := newScript(map[string]time.Duration{hPrimary: 300 * time.Millisecond}, nil)
		for range policy.HedgeMinSamples {
			if res, err := e.Do(testContext(t), hPrimary, fast.call); err != nil || res.Attempts != 1 {
				t.Fatalf("%+v %v", res, err)
			}
		}
		if err := e.Actor().Sync(testContext(t)); err != nil {
			t.Fatal(err)
		}
		s := newScript(map[string]time.Duration{hFallback: 0}, nil)
		if res, err := e.Do(testContext(t), hPrimary, s.call); err != nil || res.Target != hFallback {
			t.Fatalf("%+v %v", res, err)
		}
		if got := s.started(hFallback); len(got) != 1 || got[0] != 300*time.Millisecond {
			t.Fatalf("hedge started at %v, want [300ms]", got)
		}
		// Before any sample: max_delay_ms.
		e2 := mustEngine(t, hedgeConfig("{delay_percentile: 50, min_delay_ms: 100, max_delay_ms: 5000}", ""))
		defer e2.Close()
		s = newScript(map[string]time.Duration{hFallback: 0}, nil)
		if _, err := e2.Do(testContext(t), hPrimary, s.call); err != nil {
			t.Fatal(err)
		}
		if got := s.started(hFallback); len(got) != 1 || got[0] != 5*time.Second {
			t.Fatalf("hedge started at %v, want [5s]", got)
		}
	})
}

// TestHedgePanics: a call that panics in the hedge ends the request with a
// *PanicError, after the other call returned.
func TestHedgePanics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, hedgeConfig("{delay_ms: 1000}", ""))
		defer e.Close()
		s := newScript(nil, nil)
		call := func(ctx context.Context, a Attempt) policy.Outcome {
			if a.Target == hFallback {
				panic("boom")
			}
			return s.call(ctx, a)
		}
		_, err := e.Do(testContext(t), hPrimary, call)
		var pe *PanicError
		if !errors.As(err, &pe) || pe.Target != hFallback {
			t.Fatalf("err %v, want the hedge's panic", err)
		}
		if c := s.cause(hPrimary); len(c) != 1 {
			t.Fatal("the primary was not ended")
		}
	})
}

// TestHedgeLaterAttempt: the hedge is per attempt, not only the first's:
// the primary fails at once, the fallback it fails over to is slow, and
// the fallback gets the hedge, to the third target.
func TestHedgeLaterAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, hedgeConfig("{delay_ms: 1000}", "      default_max_attempts: 3\n      unlisted_failover: any"))
		defer e.Close()
		const mistral = "mistral/mistral-large"
		s := newScript(map[string]time.Duration{hPrimary: 0, mistral: 0}, map[string]int{hPrimary: 503})
		res, err := e.Do(testContext(t), hPrimary, s.call)
		if err != nil {
			t.Fatal(err)
		}
		if res.Target != mistral || res.Number != 3 || res.Attempts != 3 {
			t.Fatalf("result %s number %d attempts %d", res.Target, res.Number, res.Attempts)
		}
		if got := s.started(mistral); len(got) != 1 || got[0] != time.Second {
			t.Fatalf("hedge started at %v, want [1s]", got)
		}
		if c := s.cause(hFallback); len(c) != 1 || !errors.Is(c[0], ErrAbandoned) {
			t.Fatalf("the slow fallback's context ended with %v", c)
		}
	})
}

// TestWithoutHedging: the option turns every hedge off.
func TestWithoutHedging(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hl hookLog
		e := mustEngine(t, hedgeConfig("{delay_ms: 1000}", ""), WithoutHedging(), WithHooks(hl.hooks()))
		defer e.Close()
		s := newScript(map[string]time.Duration{hPrimary: 3 * time.Second, hFallback: 0}, nil)
		res, err := e.Do(testContext(t), hPrimary, s.call)
		if err != nil || res.Target != hPrimary || res.Attempts != 1 || hl.count() != 0 || len(s.started(hFallback)) != 0 {
			t.Fatalf("%+v %v, %d hedges", res, err, hl.count())
		}
	})
}

// TestHedgeBudgetShare: ten requests whose hedges come due together, with
// budget_percent 50 and no floor: five of them hedge.
func TestHedgeBudgetShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hl hookLog
		e := mustEngine(t, hedgeConfig("{delay_ms: 1000, budget_percent: 50, budget_min_per_second: 0}", ""), WithHooks(hl.hooks()))
		defer e.Close()
		s := newScript(map[string]time.Duration{hPrimary: 1500 * time.Millisecond}, nil)
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if res, err := e.Do(testContext(t), hPrimary, s.call); err != nil || res.Target != hPrimary {
					t.Errorf("%+v %v", res, err)
				}
			})
		}
		wg.Wait()
		if hl.count() != 5 || len(s.started(hFallback)) != 5 {
			t.Fatalf("%d hedges, %d hedge calls; want 5 of 10", hl.count(), len(s.started(hFallback)))
		}
	})
}

// TestHedgeRaceProperties drives many requests with random upstreams
// (each call waits a random time or hangs, then answers a random status)
// through a hedging policy, all at once in fake time, and checks what must
// hold whatever the interleaving: every Do returns exactly one result;
// every call has returned when Do returns; a success is the outcome of the
// call whose number Result.Number gives, to Result.Target, and the calls
// made are Result.Attempts; a call marked Hedge is the hedge of the call
// numbered one below it, which was still running when it started.
func TestHedgeRaceProperties(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hl hookLog
		e := mustEngine(t, hedgeConfig("{delay_ms: 1000, budget_percent: 100}", "      default_max_attempts: 3\n      unlisted_failover: any"), WithHooks(hl.hooks()))
		defer e.Close()
		type callRec struct {
			a        Attempt
			start    time.Duration
			end      time.Duration
			status   int
			returned bool
		}
		statuses := []int{200, 200, 200, 500, 503, 429}
		var hedgeCalls atomic.Int64
		var wg sync.WaitGroup
		for i := range 200 {
			rnd := rand.New(rand.NewPCG(uint64(i), 7))
			wg.Go(func() {
				var mu sync.Mutex
				var calls []*callRec
				t0 := time.Now()
				call := func(ctx context.Context, a Attempt) policy.Outcome {
					mu.Lock()
					rec := &callRec{a: a, start: time.Since(t0)}
					calls = append(calls, rec)
					hang := rnd.IntN(5) == 0
					d := time.Duration(rnd.IntN(4000)) * time.Millisecond
					st := statuses[rnd.IntN(len(statuses))]
					mu.Unlock()
					if a.Hedge {
						hedgeCalls.Add(1)
					}
					defer func() {
						mu.Lock()
						rec.returned, rec.end = true, time.Since(t0)
						mu.Unlock()
					}()
					if hang {
						<-ctx.Done()
						return policy.Outcome{Err: ctx.Err()}
					}
					select {
					case <-time.After(d):
						rec.status = st
						return policy.Outcome{Status: st}
					case <-ctx.Done():
						return policy.Outcome{Err: ctx.Err()}
					}
				}
				ctx, cancel := context.WithTimeout(testContext(t), 6*time.Second)
				defer cancel()
				res, err := e.Do(ctx, hPrimary, call)
				mu.Lock()
				defer mu.Unlock()
				for _, c := range calls {
					if !c.returned {
						t.Errorf("request %d: call %d outlived Do", i, c.a.Number)
					}
				}
				for _, c := range calls {
					if !c.a.Hedge {
						continue
					}
					var hedged *callRec
					for _, p := range calls {
						if p.a.Number == c.a.Number-1 {
							hedged = p
						}
					}
					if hedged == nil || hedged.end < c.start || c.start-hedged.start < time.Second {
						t.Errorf("request %d: hedge %d does not run beside a call started a second before it", i, c.a.Number)
					}
				}
				if err != nil {
					var ex *ExhaustedError
					if !errors.As(err, &ex) {
						t.Errorf("request %d: %v", i, err)
					}
					return
				}
				if len(calls) != res.Attempts {
					t.Errorf("request %d: %d calls, Attempts %d", i, len(calls), res.Attempts)
				}
				var won *callRec
				for _, c := range calls {
					if c.a.Number == res.Number {
						won = c
					}
				}
				if won == nil || won.a.Target != res.Target || won.status != res.Outcome.Status || res.Outcome.Status != 200 {
					t.Errorf("request %d: result %s number %d status %d is not its call's", i, res.Target, res.Number, res.Outcome.Status)
				}
			})
		}
		wg.Wait()
		if int64(hl.count()) != hedgeCalls.Load() || hl.count() == 0 {
			t.Fatalf("%d hedge events, %d hedge calls", hl.count(), hedgeCalls.Load())
		}
	})
}

// TestHedgeHookPanicWaits: a hook that panics while the hedge's call is
// still running ends the request with a *PanicError, and only after that
// call has returned.
func TestHedgeHookPanicWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hooks := Hooks{Attempt: func(ev AttemptEvent) {
			if ev.Target == hPrimary && ev.Status == 500 {
				panic("hook")
			}
		}}
		e := mustEngine(t, hedgeConfig("{delay_ms: 1000}", ""), WithHooks(hooks))
		defer e.Close()
		s := newScript(map[string]time.Duration{hPrimary: 2 * time.Second}, map[string]int{hPrimary: 500}) // the hedge hangs
		_, err := e.Do(testContext(t), hPrimary, s.call)
		var pe *PanicError
		if !errors.As(err, &pe) {
			t.Fatalf("err %v, want a *PanicError", err)
		}
		if c := s.cause(hFallback); len(c) != 1 || !errors.Is(c[0], ErrAbandoned) {
			t.Fatalf("the hedge's call was not ended before Do returned: %v", c)
		}
	})
}
