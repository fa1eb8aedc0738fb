package engine

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

const latencyCfg = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_high_latency: {threshold_ms: 1000, measure: ttfb, min_triggers: 5, trigger_window_seconds: 60, strategy: different_provider, max_attempts: 5, block_duration_seconds: 60, apply_to: request}
      default_strategy: different_provider
      default_max_attempts: 5
  - model: anthropic/claude-3-5-sonnet
`

// The Latency hook sees every measurement the policy compares with its
// threshold, not only those over it.
func TestLatencyHookSeesEveryMeasurement(t *testing.T) {
	var got []time.Duration
	e := mustEngine(t, latencyCfg, WithHooks(Hooks{Latency: func(_ string, d time.Duration) { got = append(got, d) }}))
	fast := func(context.Context, Attempt) policy.Outcome {
		return policy.Outcome{Status: 200, TTFB: 100 * time.Millisecond}
	}
	if _, err := e.Do(testContext(t), gpt, fast); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != 100*time.Millisecond {
		t.Fatalf("Latency hook calls %v, want [100ms]", got)
	}
}

// The Block hook fires once per block created, not once per fact
// reported: with min_triggers 5, three latency events create no block.
func TestBlockHookPerBlockCreated(t *testing.T) {
	var blocks int
	e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_high_latency: {threshold_ms: 1000, measure: ttfb, min_triggers: 5, trigger_window_seconds: 60, strategy: same_model, max_attempts: 5, block_duration_seconds: 60}
`, WithHooks(Hooks{Block: func(string, health.Kind, time.Duration) { blocks++ }}))
	slow := func(_ context.Context, a Attempt) policy.Outcome {
		if a.Number <= 3 {
			return policy.Outcome{Err: policy.ErrHighLatency, TTFB: 2 * time.Second}
		}
		return policy.Outcome{Status: 200}
	}
	if _, err := e.Do(testContext(t), gpt, slow); err != nil {
		t.Fatal(err)
	}
	if blocks != 0 {
		t.Fatalf("Block hook called %d times for 3 events under min_triggers 5, want 0", blocks)
	}
}

// A stream that fails after commit is a failure of its target, not both a
// success and a failure.
func TestStreamCutCountsOnceAsFailure(t *testing.T) {
	e := mustEngine(t, latencyCfg)
	res, err := e.Do(testContext(t), gpt, func(context.Context, Attempt) policy.Outcome { return policy.Outcome{Status: 200} })
	if err != nil {
		t.Fatal(err)
	}
	res.End(time.Second, errors.New("stream cut"))
	if c := e.Counts(gpt); c != (Counts{Attempts: 1, Failures: 1}) {
		t.Fatalf("counts %+v, want 1 attempt, 1 failure", c)
	}
}

// A host's hook that panics ends its request with a *PanicError; the
// engine goes on serving.
func TestPanickingHookIsTheRequestsError(t *testing.T) {
	e := mustEngine(t, benchConfig, WithHooks(Hooks{Retry: func(RetryEvent) { panic("hook bug") }}))
	_, err := e.Do(testContext(t), gpt, failPrimary)
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "hook bug" {
		t.Fatalf("err = %v, want the hook's panic", err)
	}
	if _, err := e.Do(testContext(t), gpt, succeed); err != nil {
		t.Fatalf("after the panic: %v", err)
	}
	if n := e.inflight(); n != 0 {
		t.Fatalf("%d requests still in flight", n)
	}
}

// One decision logs a blocked candidate once, even when it is both a
// fallback and a candidate of the random pick; a block a request makes for
// itself is logged with its scope, apply_to and duration.
func TestDecisionLogs(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      default_strategy: different_provider
      default_max_attempts: 3
      retry_after_handling: {apply_to: request}
  - model: anthropic/claude-3-5-sonnet
    retry_policy: {default_max_attempts: 1}
  - model: mistral/mistral-large
`, WithLogger(zap.New(core)))
	ctx := testContext(t)
	limited := policy.Outcome{Status: 429, Header: map[string][]string{"Retry-After": {"30"}}}
	// claude answers 429 Retry-After 30: a global block of claude.
	if _, err := e.Do(ctx, claude, func(context.Context, Attempt) policy.Outcome { return limited }); !errors.Is(err, ErrExhausted) {
		t.Fatalf("claude: %v", err)
	}
	if err := e.Actor().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	logs.TakeAll()
	// gpt answers the same: a block of gpt for this request alone; the
	// fallback claude is blocked, so mistral serves.
	res, err := e.Do(ctx, gpt, func(_ context.Context, a Attempt) policy.Outcome {
		if a.Target == gpt {
			return limited
		}
		return policy.Outcome{Status: 200}
	})
	if err != nil || res.Target != "mistral/mistral-large" {
		t.Fatalf("gpt: %v %+v", err, res)
	}
	if n := logs.FilterMessage("reroute candidate skipped as blocked").Len(); n != 1 {
		t.Errorf("claude logged as skipped %d times in one decision, want 1", n)
	}
	created := logs.FilterMessage("reroute block created").All()
	if len(created) != 1 {
		t.Fatalf("%d request block logs, want 1: %v", len(created), logs.All())
	}
	fields := created[0].ContextMap()
	if fields["apply_to"] != "request" || fields["scope"] != "model" || fields["duration"] != 30*time.Second || fields["id"] != gpt {
		t.Errorf("block log fields %v", fields)
	}
}

// A shared block is told once, by the actor, however many requests
// reported the Retry-After that made it.
func TestBlockHookOncePerSharedBlock(t *testing.T) {
	var mu sync.Mutex
	var names []string
	e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {fallback_models: [anthropic/claude-3-5-sonnet], default_strategy: different_provider, default_max_attempts: 2}
  - model: anthropic/claude-3-5-sonnet
`, WithHooks(Hooks{Block: func(id string, _ health.Kind, _ time.Duration) {
		mu.Lock()
		names = append(names, id)
		mu.Unlock()
	}}))
	ctx := testContext(t)
	call := func(_ context.Context, a Attempt) policy.Outcome {
		if a.Target == gpt {
			return policy.Outcome{Status: 429, Header: map[string][]string{"Retry-After": {"30"}}}
		}
		return policy.Outcome{Status: 200}
	}
	for range 3 { // the first blocks gpt; the next two skip it
		if _, err := e.Do(ctx, gpt, call); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Actor().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(names) != 1 || names[0] != gpt {
		t.Fatalf("Block hook calls %v, want one for %s", names, gpt)
	}
}
