package engine

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

// The engine-wide protections (docs/behaviour.md#engine-wide-limits), the
// block scopes (#retry-after-scope-and-apply_to) and the renderings of an
// exhausted request (#the-error-response), each in virtual time.

// doResult is what a Do run on another goroutine returned.
type doResult struct {
	res Result
	err error
}

// docs/behaviour.md#engine-wide-limits: with max_retrying_requests 1, a request that fails while
// another is retrying gets its one attempt and no retry (fail-open); once
// the retrying request ends, retries are allowed again.
func TestMaxRetryingRequestsFailOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_status_codes: [{codes: [503], strategy: same_model, max_attempts: 3}]
      backoff: {apply_to: same_model, base_ms: 10000, max_ms: 20000, jitter: false}
  - model: anthropic/claude-3-5-sonnet
    retry_policy: {on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 3}]}
engine: {max_retrying_requests: 1}
`)
		up := newUpstreams(map[string][]step{gpt: {{status: 503}, {status: 200}}, claude: {{status: 503}}})
		ctx := testContext(t)
		first := make(chan doResult, 1)
		go func() {
			res, err := e.Do(ctx, gpt, up.call)
			first <- doResult{res, err}
		}()
		synctest.Wait() // request 1 failed once and sleeps 10 s holding the only slot

		start := time.Now()
		_, err := e.Do(ctx, claude, up.call)
		ex := asExhausted(t, err)
		if ex.Reason != ReasonRetryLimit || len(ex.Attempts) != 1 || ex.Attempts[0].Target != claude || ex.BudgetExhausted {
			t.Errorf("request 2: %+v, want one attempt and %s", ex, ReasonRetryLimit)
		}
		if took := time.Since(start); took != 0 {
			t.Errorf("request 2 took %v, want 0", took)
		}
		if n := up.count(gpt); n != 1 {
			t.Errorf("gpt called %d times while request 1 waits, want 1 (calls %v)", n, up.order())
		}

		r1 := <-first
		if r1.err != nil || r1.res.Target != gpt || r1.res.Attempts != 2 {
			t.Fatalf("request 1: %v %+v", r1.err, r1.res)
		}
		if took := time.Since(start); took != 10*time.Second {
			t.Errorf("request 1 ended %v after request 2, want 10s", took)
		}

		// The slot is free again: request 3 fails over.
		res, err := e.Do(ctx, claude, up.call)
		if err != nil || res.Target != gpt || res.Attempts != 2 {
			t.Fatalf("request 3: %v %+v (calls %v)", err, res, up.order())
		}
	})
}

// budgetConfig retries a 503 of gpt-4o on its own provider (gpt-4o-mini):
// the retries the budget counts. Passive health is off, so that the
// primary keeps getting every request's first attempt.
const budgetConfig = `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {on_status_codes: [{codes: [503], strategy: same_provider, max_attempts: 2}]}
  - model: openai/gpt-4o-mini
  - model: anthropic/claude-3-5-sonnet
engine: {retry_budget: %s, passive_health: {enabled: false}}
`

const mini = "openai/gpt-4o-mini"

// The budget protects a provider from its own retries: a failover to
// another provider is not charged to it. With a budget of nothing at all,
// every failover from gpt-4o to claude is still made, and every retry on
// OpenAI is refused.
func TestRetryBudgetChargesOnlySameProviderRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {fallback_models: [anthropic/claude-3-5-sonnet], on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 2}]}
  - model: openai/gpt-4o-mini
    retry_policy: {on_status_codes: [{codes: [503], strategy: same_provider, max_attempts: 2}]}
  - model: anthropic/claude-3-5-sonnet
engine: {retry_budget: {percent: 0, min_per_second: 0}, passive_health: {enabled: false}}
`)
		up := newUpstreams(map[string][]step{gpt: {{status: 503}}, mini: {{status: 503}}, claude: {{status: 200}}})
		ctx := testContext(t)
		for i := range 50 {
			res, err := e.Do(ctx, gpt, up.call)
			if err != nil || res.Target != claude || res.Attempts != 2 {
				t.Fatalf("failover %d: %v %+v", i+1, err, res)
			}
		}
		_, err := e.Do(ctx, mini, up.call)
		if ex := asExhausted(t, err); ex.Reason != ReasonBudget {
			t.Fatalf("a same-provider retry under a budget of 0: %+v", ex)
		}
	})
}

// docs/behaviour.md#engine-wide-limits: the retry budget {0 %, 1/s, 10 s} grants 10 retries per 10 s
// window; the 11th is refused (budget_exhausted); a window later retries
// are granted again.
func TestRetryBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, fmt.Sprintf(budgetConfig, `{percent: 0, min_per_second: 1, window: 10s}`))
		up := newUpstreams(map[string][]step{gpt: {{status: 503}}, mini: {{status: 200}}})
		ctx := testContext(t)
		for i := range 10 {
			res, err := e.Do(ctx, gpt, up.call)
			if err != nil || res.Target != mini || res.Attempts != 2 {
				t.Fatalf("retry %d: %v %+v", i+1, err, res)
			}
			time.Sleep(500 * time.Millisecond)
		}
		_, err := e.Do(ctx, gpt, up.call)
		ex := asExhausted(t, err)
		if ex.Reason != ReasonBudget || !ex.BudgetExhausted || len(ex.Attempts) != 1 {
			t.Fatalf("retry 11: %+v, want refused by the budget after one attempt", ex)
		}
		_, body := render(t, ex)
		if body.Error.BudgetExhausted == nil || !*body.Error.BudgetExhausted || body.Error.Message != "All retry attempts exhausted: retry budget exceeded" {
			t.Errorf("body = %+v", body.Error)
		}
		if n := up.count(mini); n != 10 {
			t.Errorf("mini called %d times, want 10", n)
		}

		time.Sleep(10 * time.Second) // the window has passed
		for i := range 10 {
			res, err := e.Do(ctx, gpt, up.call)
			if err != nil || res.Target != mini {
				t.Fatalf("after the window, retry %d: %v %+v", i+1, err, res)
			}
		}
	})
}

func TestRetryBudgetDisabledNeverRefuses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, fmt.Sprintf(budgetConfig, `{enabled: false, percent: 0, min_per_second: 0}`))
		up := newUpstreams(map[string][]step{gpt: {{status: 503}}, mini: {{status: 200}}})
		ctx := testContext(t)
		for i := range 500 { // all in the same virtual instant
			res, err := e.Do(ctx, gpt, up.call)
			if err != nil || res.Target != mini || res.Attempts != 2 {
				t.Fatalf("request %d: %v %+v", i+1, err, res)
			}
		}
	})
}

// docs/behaviour.md#time-budget: max_retry_duration_ms starts when the first attempt fails, is
// checked before choosing and again with the wait added.
func TestMaxRetryDurationExhausts(t *testing.T) {
	tests := []struct {
		name     string
		policy   string
		script   []step
		attempts int
		took     time.Duration
	}{
		{
			name: "the next wait would end past the budget",
			policy: `
      on_status_codes: [{codes: [503], strategy: same_model, max_attempts: 5}]
      backoff: {apply_to: same_model, base_ms: 1000, max_ms: 10000, jitter: false}
      max_retry_duration_ms: 2500`,
			// fails at 0 s, waits 1 s, fails at 1 s; 1 s + 2 s > 2.5 s
			script:   []step{{status: 503}},
			attempts: 2,
			took:     time.Second,
		},
		{
			name: "slow attempts used the budget up",
			policy: `
      on_status_codes: [{codes: [503], strategy: same_model, max_attempts: 5}]
      max_retry_duration_ms: 2500`,
			// fails at 3 s (the budget starts), at 6 s, at 9 s: 6 s ≥ 2.5 s
			// after the first failure
			script:   []step{{status: 503, latency: 3 * time.Second}},
			attempts: 2,
			took:     6 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:`+tt.policy)
				up := newUpstreams(map[string][]step{gpt: tt.script})
				start := time.Now()
				_, err := e.Do(testContext(t), gpt, sleepingCall(up))
				ex := asExhausted(t, err)
				if ex.Reason != ReasonBudget || !ex.BudgetExhausted || len(ex.Attempts) != tt.attempts {
					t.Errorf("exhaustion %+v, want %s after %d attempts", ex, ReasonBudget, tt.attempts)
				}
				if took := time.Since(start); took != tt.took {
					t.Errorf("took %v, want %v", took, tt.took)
				}
				rec, body := render(t, ex)
				if rec.Code != 503 || body.Error.BudgetExhausted == nil || !*body.Error.BudgetExhausted ||
					body.Error.Message != "All retry attempts exhausted: retry budget exceeded" {
					t.Errorf("rendered %d %s", rec.Code, rec.Body)
				}
			})
		})
	}
}

// sleepingCall makes a scripted upstream take its latency in (virtual)
// time, as a real one would.
func sleepingCall(up *upstreams) Call {
	return func(ctx context.Context, a Attempt) policy.Outcome {
		o := up.call(ctx, a)
		if o.Total > 0 {
			time.Sleep(o.Total)
		}
		return o
	}
}

// docs/behaviour.md#latency-blocks: a request-scoped latency block keeps the request that saw the
// event from retrying the target, and is forgotten by the next request; a
// global one also keeps the next request away.
func TestRequestScopedLatencyBlock(t *testing.T) {
	config := func(latency string) string {
		return `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_timeout: {strategy: same_model, max_attempts: 3}` + latency + `
engine: {timeouts: {attempt: 2s}}
`
	}
	const onHighLatency = `
      on_high_latency: {threshold_ms: 1000, min_triggers: 1, strategy: same_model, max_attempts: 3, block_duration_seconds: 60, apply_to: %s}`
	tests := []struct {
		name      string
		latency   string
		attempts1 int // attempts of request 1
		attempts2 int // attempts of request 2
	}{
		{"without on_high_latency the timeouts are retried", "", 3, 3},
		{"apply_to request", fmt.Sprintf(onHighLatency, "request"), 1, 1},
		{"apply_to global", fmt.Sprintf(onHighLatency, "global"), 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := mustEngine(t, config(tt.latency))
				up := newUpstreams(map[string][]step{gpt: {{hang: true}}})
				ctx := testContext(t)
				_, err := e.Do(ctx, gpt, up.call)
				ex := asExhausted(t, err)
				if len(ex.Attempts) != tt.attempts1 {
					t.Errorf("request 1: %d attempts (%+v), want %d", len(ex.Attempts), ex, tt.attempts1)
				}
				if err := e.Actor().Sync(ctx); err != nil {
					t.Fatal(err)
				}
				before := up.count(gpt)
				_, err = e.Do(ctx, gpt, up.call)
				ex = asExhausted(t, err)
				if n := up.count(gpt) - before; n != tt.attempts2 || len(ex.Attempts) != n {
					t.Errorf("request 2: %d calls, %d attempts listed, want %d", n, len(ex.Attempts), tt.attempts2)
				}
				if tt.attempts2 == 0 {
					if rec, _ := render(t, ex); rec.Code != 503 || rec.Header().Get("Retry-After") != "60" {
						t.Errorf("request 2 rendered %d with Retry-After %q, want 503 and 60", rec.Code, rec.Header().Get("Retry-After"))
					}
				}
			})
		})
	}
}

// docs/behaviour.md#retry-after-scope-and-apply_to: a provider-scoped global Retry-After blocks every model of
// the provider for later requests, whichever of them is the primary.
func TestProviderScopedRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const mini = "openai/gpt-4o-mini"
		e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]
      retry_after_handling: {scope: provider, apply_to: global}
  - model: openai/gpt-4o-mini
    retry_policy: {on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]}
  - model: anthropic/claude-3-5-sonnet
`)
		up := newUpstreams(map[string][]step{gpt: {{status: 429, retryAfter: "30"}, {status: 200}}})
		ctx := testContext(t)
		if res, err := e.Do(ctx, gpt, up.call); err != nil || res.Target != claude {
			t.Fatalf("request 1: %v %+v", err, res)
		}
		if err := e.Actor().Sync(ctx); err != nil {
			t.Fatal(err)
		}
		blocks, err := e.Actor().Blocks(ctx)
		if err != nil || len(blocks) != 1 || blocks[0].Name != "openai" || blocks[0].Kind != health.RetryAfter {
			t.Fatalf("blocks = %+v, %v; want one retry-after block on provider openai", blocks, err)
		}
		for _, primary := range []string{mini, gpt} {
			res, err := e.Do(ctx, primary, up.call)
			if err != nil || res.Target != claude || res.Attempts != 1 {
				t.Errorf("primary %s during the block: %v %+v", primary, err, res)
			}
		}
		if up.count(mini) != 0 || up.count(gpt) != 1 {
			t.Errorf("calls %v: no openai model may be called during the block", up.order())
		}
		time.Sleep(30 * time.Second)
		for _, primary := range []string{mini, gpt} {
			if res, err := e.Do(ctx, primary, up.call); err != nil || res.Target != primary {
				t.Errorf("primary %s after the block: %v %+v", primary, err, res)
			}
		}
	})
}

// docs/behaviour.md#outcome-classification: 1xx and 3xx are not retriable, even when a status rule lists
// them; they are returned as they are.
func TestInformationalAndRedirectPassThrough(t *testing.T) {
	e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {on_status_codes: [{codes: ["100-599"], strategy: different_provider, max_attempts: 3}]}
  - model: anthropic/claude-3-5-sonnet
`)
	for _, status := range []int{100, 103, 301, 302, 304, 307} {
		up := newUpstreams(map[string][]step{gpt: {{status: status}}})
		res, err := e.Do(testContext(t), gpt, up.call)
		if err != nil || res.Target != gpt || res.Attempts != 1 || res.Outcome.Status != status || res.Class != policy.PassThrough {
			t.Errorf("status %d: %v %+v", status, err, res)
		}
		if n := up.count(claude); n != 0 {
			t.Errorf("status %d: fallback called %d times", status, n)
		}
	}
}

// docs/behaviour.md#the-error-response: a request whose last attempt timed out renders as 504 with
// error_type timeout_<ms>ms, also when the Call reports no latency and the
// policy has no on_high_latency.
func TestTimeoutExhaustionRendering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {on_timeout: {strategy: different_provider, max_attempts: 2}}
  - model: anthropic/claude-3-5-sonnet
    timeouts: {attempt: 1500ms}
engine: {timeouts: {attempt: 2s}}
`)
		up := newUpstreams(map[string][]step{gpt: {{hang: true}}, claude: {{hang: true}}})
		start := time.Now()
		_, err := e.Do(testContext(t), gpt, up.call)
		ex := asExhausted(t, err)
		if took := time.Since(start); took != 3500*time.Millisecond {
			t.Errorf("took %v, want 3.5s (two attempt timeouts)", took)
		}
		rec, body := render(t, ex)
		b := body.Error
		if rec.Code != 504 || b.Message != "All retry attempts exhausted: upstream request timed out" || b.TotalAttempts != 2 || len(b.Attempts) != 2 {
			t.Fatalf("rendered %d %s", rec.Code, rec.Body)
		}
		if b.Attempts[0].ErrorType != "timeout_2000ms" || b.Attempts[1].ErrorType != "timeout_1500ms" {
			t.Errorf("error types %q, %q; want timeout_2000ms, timeout_1500ms", b.Attempts[0].ErrorType, b.Attempts[1].ErrorType)
		}
		if b.BudgetExhausted == nil || *b.BudgetExhausted || rec.Header().Get("Retry-After") != "" {
			t.Errorf("rendered %v %s", rec.Header(), rec.Body)
		}
	})
}

// docs/behaviour.md#the-error-response: when every target is blocked no attempt is made, and the
// answer is 503 with a Retry-After of the shortest remaining block, rounded
// up.
func TestAllBlockedRendering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]}
  - model: anthropic/claude-3-5-sonnet
`)
		up := newUpstreams(map[string][]step{gpt: {{status: 429, retryAfter: "30"}}, claude: {{status: 429, retryAfter: "12"}}})
		ctx := testContext(t)
		_, err := e.Do(ctx, gpt, up.call)
		if ex := asExhausted(t, err); ex.Status() != 429 || len(ex.Attempts) != 2 {
			t.Fatalf("request 1: %+v", ex)
		}
		if err := e.Actor().Sync(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond)
		_, err = e.Do(ctx, gpt, up.call)
		ex := asExhausted(t, err)
		if ex.Reason != ReasonProviders || ex.ShortestBlock != 9500*time.Millisecond {
			t.Errorf("request 2: %+v, want %s and the shortest block 9.5s", ex, ReasonProviders)
		}
		rec, body := render(t, ex)
		b := body.Error
		if rec.Code != 503 || rec.Header().Get("Retry-After") != "10" {
			t.Errorf("rendered %d with Retry-After %q, want 503 and 10", rec.Code, rec.Header().Get("Retry-After"))
		}
		if b.TotalAttempts != 0 || len(b.Attempts) != 0 || b.ShortestBlock == nil || *b.ShortestBlock != 9.5 || b.MaxRetryAfter != nil {
			t.Errorf("body %s", rec.Body)
		}
		if n := len(up.order()); n != 2 {
			t.Errorf("%d calls, want the 2 of request 1", n)
		}
	})
}

// docs/behaviour.md#streamed-answers and Result.End: a streamed answer whose total time is over a
// measure: total threshold reports a latency event when it ends, and the
// global block it creates keeps the next request away.
func TestResultEndReportsTotalLatency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_high_latency: {threshold_ms: 1000, measure: total, min_triggers: 1, strategy: different_provider, max_attempts: 2, block_duration_seconds: 60}
  - model: anthropic/claude-3-5-sonnet
`)
		ctx := testContext(t)
		var calls []string
		stream := func(ctx context.Context, a Attempt) policy.Outcome {
			calls = append(calls, a.Target)
			// Committed at the first byte: Total is not known yet.
			return policy.Outcome{Status: 200, TTFB: 100 * time.Millisecond}
		}
		res, err := e.Do(ctx, gpt, stream)
		if err != nil || res.Target != gpt || res.Class != policy.Success {
			t.Fatalf("request 1: %v %+v", err, res)
		}
		res.End(1500*time.Millisecond, nil)
		if err := e.Actor().Sync(ctx); err != nil {
			t.Fatal(err)
		}
		res, err = e.Do(ctx, gpt, stream)
		if err != nil || res.Target != claude || res.Attempts != 1 {
			t.Fatalf("request 2: %v %+v (calls %v)", err, res, calls)
		}
		if c := e.Counts(gpt); c != (Counts{Attempts: 1, Successes: 1}) {
			t.Errorf("gpt counts %+v, want 1 attempt, 1 success", c)
		}

		// Under the threshold: no event, no block.
		time.Sleep(61 * time.Second)
		res, err = e.Do(ctx, gpt, stream)
		if err != nil || res.Target != gpt {
			t.Fatalf("request 3: %v %+v", err, res)
		}
		res.End(900*time.Millisecond, nil)
		e.Actor().Sync(ctx)
		if res, err = e.Do(ctx, gpt, stream); err != nil || res.Target != gpt {
			t.Fatalf("request 4: %v %+v", err, res)
		}
	})
}
