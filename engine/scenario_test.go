package engine

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/reroute-go/reroute/policy"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const (
	gpt    = "openai/gpt-4o"
	claude = "anthropic/claude-3-5-sonnet"
	mist   = "mistral/mistral-large"
)

// The reference scenarios of docs/behaviour.md#worked-examples (1–11; 12 and 13 are HTTP ones and
// live with the HTTP adapter), in virtual time.
func TestReferenceScenarios(t *testing.T) {
	twoTargets := func(policy string) string {
		return `
model_providers:
  - model: openai/gpt-4o
    retry_policy: ` + policy + `
  - model: anthropic/claude-3-5-sonnet
`
	}
	tests := []struct {
		name    string
		config  string
		script  map[string][]step
		want    string         // served target; "" = exhausted
		status  int            // served status, or the rendered status of the exhaustion
		calls   map[string]int // exact calls per target
		atLeast time.Duration  // minimum virtual time the request took
	}{
		{
			name:   "1 429 fails over to another provider",
			config: twoTargets(`{on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]}`),
			script: map[string][]step{gpt: {{status: 429}}, claude: {{status: 200}}},
			want:   claude, status: 200,
			calls: map[string]int{gpt: 1, claude: 1},
		},
		{
			name:   "2 503 fails over to another provider",
			config: twoTargets(`{on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 2}]}`),
			script: map[string][]step{gpt: {{status: 503}}, claude: {{status: 200}}},
			want:   claude, status: 200,
			calls: map[string]int{gpt: 1, claude: 1},
		},
		{
			name:   "3 both 429: exhausted with both attempts",
			config: twoTargets(`{on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]}`),
			script: map[string][]step{gpt: {{status: 429}}, claude: {{status: 429}}},
			status: 429,
			calls:  map[string]int{gpt: 1, claude: 1},
		},
		{
			name: "4 no retry_policy: the primary's answer as it is",
			config: `
model_providers:
  - model: openai/gpt-4o
  - model: anthropic/claude-3-5-sonnet
`,
			script: map[string][]step{gpt: {{status: 429}}},
			want:   gpt, status: 429,
			calls: map[string]int{gpt: 1, claude: 0},
		},
		{
			name: "5 max_attempts 1: no retry",
			config: `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 1}]}
  - model: anthropic/claude-3-5-sonnet
  - model: mistral/mistral-large
`,
			script: map[string][]step{gpt: {{status: 429}}},
			status: 429,
			calls:  map[string]int{gpt: 1, claude: 0, mist: 0},
		},
		{
			name: "6 same model with backoff",
			config: `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_status_codes: [{codes: [429], strategy: same_model, max_attempts: 3}]
      backoff: {apply_to: same_model, base_ms: 500, max_ms: 5000, jitter: false}
`,
			script: map[string][]step{gpt: {{status: 429}, {status: 429}, {status: 200}}},
			want:   gpt, status: 200,
			calls:   map[string]int{gpt: 3},
			atLeast: 1500 * time.Millisecond,
		},
		{
			name: "7 fallbacks in order",
			config: `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet, mistral/mistral-large]
      on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 3}]
  - model: anthropic/claude-3-5-sonnet
  - model: mistral/mistral-large
`,
			script: map[string][]step{gpt: {{status: 429}}, claude: {{status: 429}}, mist: {{status: 200}}},
			want:   mist, status: 200,
			calls: map[string]int{gpt: 1, claude: 1, mist: 1},
		},
		{
			name: "8 request-scoped Retry-After is waited out",
			config: `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_status_codes: [{codes: [429], strategy: same_model, max_attempts: 2}]
      retry_after_handling: {scope: model, apply_to: request, max_retry_after_seconds: 300}
`,
			script: map[string][]step{gpt: {{status: 429, retryAfter: "2"}, {status: 200}}},
			want:   gpt, status: 200,
			calls:   map[string]int{gpt: 2},
			atLeast: 2 * time.Second,
		},
		{
			name: "10 a hanging primary costs one attempt timeout",
			config: `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {on_timeout: {strategy: different_provider, max_attempts: 2}}
  - model: anthropic/claude-3-5-sonnet
engine: {timeouts: {attempt: 2s}}
`,
			script: map[string][]step{gpt: {{hang: true}}, claude: {{status: 200}}},
			want:   claude, status: 200,
			calls:   map[string]int{gpt: 1, claude: 1},
			atLeast: 2 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := mustEngine(t, tt.config)
				up := newUpstreams(tt.script)
				start := time.Now()
				res, err := e.Do(testContext(t), gpt, up.call)
				took := time.Since(start)
				if tt.want == "" {
					var ex *ExhaustedError
					if !errors.As(err, &ex) {
						t.Fatalf("err = %v, want *ExhaustedError", err)
					}
					if ex.Status() != tt.status {
						t.Errorf("rendered status = %d, want %d", ex.Status(), tt.status)
					}
					var total int
					for _, n := range tt.calls {
						total += n
					}
					if len(ex.Attempts) != total {
						t.Errorf("attempts listed = %d, want %d", len(ex.Attempts), total)
					}
				} else {
					if err != nil {
						t.Fatalf("Do: %v", err)
					}
					if res.Target != tt.want || res.Outcome.Status != tt.status {
						t.Errorf("served by %s with %d, want %s with %d", res.Target, res.Outcome.Status, tt.want, tt.status)
					}
				}
				for target, n := range tt.calls {
					if got := up.count(target); got != n {
						t.Errorf("%s called %d times, want %d (calls %v)", target, got, n, up.order())
					}
				}
				if took < tt.atLeast {
					t.Errorf("took %v, want at least %v", took, tt.atLeast)
				}
			})
		})
	}
}

// Scenario 3's exhaustion renders as docs/behaviour.md#the-error-response says.
func TestExhaustedRendering(t *testing.T) {
	e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]}
  - model: anthropic/claude-3-5-sonnet
`)
	up := newUpstreams(map[string][]step{gpt: {{status: 429, retryAfter: "7"}}, claude: {{status: 429}}})
	_, err := e.Do(testContext(t), gpt, up.call)
	var ex *ExhaustedError
	if !errors.As(err, &ex) || !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v, want *ExhaustedError", err)
	}
	rec := httptest.NewRecorder()
	ex.WriteHTTP(rec, "req-1")
	if rec.Code != 429 || rec.Header().Get("Content-Type") != "application/json" || rec.Header().Get("X-Request-Id") != "req-1" {
		t.Errorf("status %d headers %v", rec.Code, rec.Header())
	}
	var body struct {
		Error struct {
			Message  string `json:"message"`
			Type     string `json:"type"`
			Attempts []struct {
				Model     string `json:"model"`
				ErrorType string `json:"error_type"`
				Attempt   int    `json:"attempt"`
			} `json:"attempts"`
			Total         int      `json:"total_attempts"`
			MaxRetryAfter *float64 `json:"observed_max_retry_after_seconds"`
			Budget        *bool    `json:"retry_budget_exhausted"`
		} `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	b := body.Error
	if b.Type != "retry_exhausted" || b.Total != 2 || len(b.Attempts) != 2 || b.Message != "All retry attempts exhausted" {
		t.Errorf("body = %s", rec.Body)
	}
	if b.Attempts[0].Model != gpt || b.Attempts[0].ErrorType != "http_429" || b.Attempts[0].Attempt != 1 || b.Attempts[1].Model != claude || b.Attempts[1].Attempt != 2 {
		t.Errorf("attempts = %+v", b.Attempts)
	}
	if b.MaxRetryAfter == nil || *b.MaxRetryAfter != 7 || b.Budget == nil || *b.Budget {
		t.Errorf("observed_max_retry_after_seconds / retry_budget_exhausted = %v / %v", b.MaxRetryAfter, b.Budget)
	}
}

// Scenarios 9 and 11: a global block created by one request keeps the next
// request away from the primary.
func TestGlobalBlocksSkipPrimary(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		first  step
		// the first request's result
		firstServedBy string
	}{
		{
			name:          "9 Retry-After 60 global",
			policy:        `{on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}], retry_after_handling: {scope: model, apply_to: global}}`,
			first:         step{status: 429, retryAfter: "60"},
			firstServedBy: claude,
		},
		{
			name:          "11 slow success creates a latency block",
			policy:        `{on_high_latency: {threshold_ms: 1000, measure: total, min_triggers: 1, strategy: different_provider, max_attempts: 2, block_duration_seconds: 60, scope: model, apply_to: global}}`,
			first:         step{status: 200, latency: 1500 * time.Millisecond},
			firstServedBy: gpt,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy: `+tt.policy+`
  - model: anthropic/claude-3-5-sonnet
`)
				up := newUpstreams(map[string][]step{gpt: {tt.first, {status: 200}}, claude: {{status: 200}}})
				ctx := testContext(t)
				res, err := e.Do(ctx, gpt, up.call)
				if err != nil || res.Target != tt.firstServedBy {
					t.Fatalf("request 1: %v, %+v", err, res)
				}
				if err := e.Actor().Sync(ctx); err != nil {
					t.Fatal(err)
				}
				time.Sleep(30 * time.Second) // virtual: still inside the 60 s block
				res, err = e.Do(ctx, gpt, up.call)
				if err != nil || res.Target != claude {
					t.Fatalf("request 2: %v, %+v", err, res)
				}
				if n := up.count(gpt); n != 1 {
					t.Errorf("primary called %d times, want 1 (calls %v)", n, up.order())
				}
				time.Sleep(31 * time.Second) // past the block
				res, err = e.Do(ctx, gpt, up.call)
				if err != nil || res.Target != gpt {
					t.Fatalf("request 3, after the block: %v, %+v", err, res)
				}
			})
		})
	}
}

func TestDeadlineShorterThanRetryAfterExhaustsAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {on_status_codes: [{codes: [429], strategy: same_model, max_attempts: 3}]}
`)
		up := newUpstreams(map[string][]step{gpt: {{status: 429, retryAfter: "10"}, {status: 200}}})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		_, err := e.Do(ctx, gpt, up.call)
		var ex *ExhaustedError
		if !errors.As(err, &ex) || ex.Reason != ReasonDeadline || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want exhaustion for the deadline", err)
		}
		if took := time.Since(start); took != 0 {
			t.Errorf("took %v of virtual time, want 0: the wait must not start", took)
		}
		if ex.MaxRetryAfter != 10*time.Second || len(ex.Attempts) != 1 {
			t.Errorf("exhaustion = %+v", ex)
		}
	})
}

func TestCancellationEndsWaitPromptly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_status_codes: [{codes: [503], strategy: same_model, max_attempts: 3}]
      backoff: {apply_to: same_model, base_ms: 5000, max_ms: 10000, jitter: false}
`)
		up := newUpstreams(map[string][]step{gpt: {{status: 503}}})
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			time.Sleep(time.Second)
			cancel()
		}()
		start := time.Now()
		_, err := e.Do(ctx, gpt, up.call)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if took := time.Since(start); took != time.Second {
			t.Errorf("took %v, want 1s (the moment of cancellation)", took)
		}
	})
}

func TestPanicInCallIsTheRequestsError(t *testing.T) {
	e := mustEngine(t, `model_providers: [{model: openai/gpt-4o}]`)
	_, err := e.Do(testContext(t), gpt, func(context.Context, Attempt) policy.Outcome { panic("boom") })
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "boom" || pe.Target != gpt {
		t.Fatalf("err = %v, want *PanicError", err)
	}
	// The engine still serves.
	res, err := e.Do(testContext(t), gpt, newUpstreams(nil).call)
	if err != nil || res.Outcome.Status != 200 {
		t.Fatalf("after panic: %v %+v", err, res)
	}
}

func TestUnknownModelAndClosed(t *testing.T) {
	e := mustEngine(t, `model_providers: [{model: openai/gpt-4o}]`)
	if _, err := e.Do(testContext(t), "nope/x", newUpstreams(nil).call); !errors.Is(err, ErrUnknownModel) {
		t.Errorf("unknown model: %v", err)
	}
	e.Close()
	e.Close() // idempotent
	if _, err := e.Do(testContext(t), gpt, newUpstreams(nil).call); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

func TestPrimaryBlockedBeforeFirstAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {default_strategy: same_model, default_max_attempts: 3}
`)
		up := newUpstreams(map[string][]step{gpt: {{status: 429, retryAfter: "5"}, {status: 200}}})
		ctx := testContext(t)
		start := time.Now()
		res, err := e.Do(ctx, gpt, up.call)
		if err != nil || res.Attempts != 2 || time.Since(start) != 5*time.Second {
			t.Fatalf("request 1: %v %+v after %v", err, res, time.Since(start))
		}
		// Block again, then a new request waits out the block before its
		// first attempt instead of sending into it.
		up2 := newUpstreams(map[string][]step{gpt: {{status: 429, retryAfter: "4"}}})
		ctx2, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if _, err := e.Do(ctx2, gpt, up2.call); err == nil {
			t.Fatal("request 2 should fail")
		}
		e.Actor().Sync(ctx)
		up3 := newUpstreams(nil)
		start = time.Now()
		res, err = e.Do(ctx, gpt, up3.call)
		if err != nil || res.Attempts != 1 || up3.count(gpt) != 1 {
			t.Fatalf("request 3: %v %+v", err, res)
		}
		if took := time.Since(start); took < 3*time.Second {
			t.Errorf("request 3 took %v, want the remaining block (≥ 3s) waited before its only attempt", took)
		}
	})
}

func TestSameModelRetriesThenFallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      same_model_retries: 2
      on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 6}]
      backoff: {apply_to: same_model, base_ms: 100, max_ms: 1000, jitter: false}
  - model: anthropic/claude-3-5-sonnet
  - model: mistral/mistral-large
`)
		up := newUpstreams(map[string][]step{gpt: {{status: 503}}, claude: {{status: 503}, {status: 503}, {status: 200}}})
		start := time.Now()
		res, err := e.Do(testContext(t), gpt, up.call)
		if err != nil || res.Target != claude {
			t.Fatalf("%v %+v (calls %v)", err, res, up.order())
		}
		want := []string{gpt, gpt, gpt, claude, claude, claude}
		if got := up.order(); !slices.Equal(got, want) {
			t.Errorf("calls %v, want %v", got, want)
		}
		// Backoff only between same-target attempts: after attempts 1, 2
		// (gpt) and 4, 5 (claude): 100+200+800+1000 ms.
		if took := time.Since(start); took != 2100*time.Millisecond {
			t.Errorf("took %v, want 2.1s", took)
		}
	})
}

func TestRequestIDInLogs(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 2}]}
  - model: anthropic/claude-3-5-sonnet
`, WithLogger(zap.New(core)))
	up := newUpstreams(map[string][]step{gpt: {{status: 503}}, claude: {{status: 503}}})
	_, err := e.Do(WithRequestID(testContext(t), "req-42"), gpt, up.call)
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("err = %v", err)
	}
	for _, msg := range []string{"reroute attempt failed", "reroute retry started", "reroute request exhausted"} {
		entries := logs.FilterMessage(msg).FilterField(zap.String("request_id", "req-42")).All()
		if len(entries) == 0 {
			t.Errorf("no %q entry with the request id; logged: %v", msg, logs.All())
		}
	}
	for _, entry := range logs.All() {
		for _, f := range entry.Context {
			if f.Key == "body" || f.Key == "access_key" || f.Key == "authorization" {
				t.Errorf("%q logs %s", entry.Message, f.Key)
			}
		}
	}
}

func TestNilArgumentsAreErrors(t *testing.T) {
	e := mustEngine(t, `model_providers: [{model: openai/gpt-4o}]`)
	//lint:ignore SA1012 a nil context is the bad input under test
	if _, err := e.Do(nil, gpt, newUpstreams(nil).call); err == nil { //nolint:staticcheck
		t.Error("nil context accepted")
	}
	if _, err := e.Do(testContext(t), gpt, nil); err == nil {
		t.Error("nil call accepted")
	}
}

// engine.New does not finalize a configuration again: an access_key whose
// expanded value contains "$" reaches the call intact.
func TestNewKeepsExpandedKeys(t *testing.T) {
	t.Setenv("REROUTE_ENGINE_TEST_KEY", "sk-abc$def")
	cfg, _, err := policy.Parse([]byte("model_providers:\n  - model: openai/gpt-4o\n    access_key: $REROUTE_ENGINE_TEST_KEY\n"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var key string
	if _, err := e.Do(testContext(t), gpt, func(_ context.Context, a Attempt) policy.Outcome {
		key = a.Provider.AccessKey
		return policy.Outcome{Status: 200}
	}); err != nil {
		t.Fatal(err)
	}
	if key != "sk-abc$def" {
		t.Fatalf("the call got key %q, want %q", key, "sk-abc$def")
	}
}
