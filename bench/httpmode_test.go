package bench

import (
	"context"
	"testing"
	"time"
)

// The HTTP mode acts the scenario out over loopback through the adapter:
// failover, Retry-After blocks, hangs cut by the attempt timeout, resets,
// the naive baseline straight to the primary, and the naive-failover
// baseline straight to the primary and then its fallbacks.
func TestHTTPMode(t *testing.T) {
	if testing.Short() {
		t.Skip("real time")
	}
	sc := mustScenario(t, "http.yaml", doc(
		"name: http-test",
		"seed: 3",
		"config:",
		"  model_providers:",
		"    - model: openai/gpt-4o",
		"      retry_policy:",
		"        fallback_models: [anthropic/claude-3-5-sonnet, google/gemini-1.5-pro]",
		"        on_status_codes: [{codes: [429, 503], strategy: different_provider, max_attempts: 3}]",
		"        on_timeout: {strategy: different_provider, max_attempts: 3}",
		"    - model: anthropic/claude-3-5-sonnet",
		"    - model: google/gemini-1.5-pro",
		"  engine: {timeouts: {attempt: 1s}}", // long enough that a CPU stall of the test machine is not an upstream timeout
		"workload: {model: openai/gpt-4o, requests: 300, rate: 250, timeout: 5s}",
		"upstreams:",
		"  openai/gpt-4o:",
		"    latency: {ttfb: 2ms, total: 4ms}",
		"    phases: [{at: 0s, status: 429, retry_after: \"1\", share: 0.5, latency: {ttfb: 1ms}}]",
		"  anthropic/claude-3-5-sonnet:",
		"    latency: {ttfb: 2ms, total: 5ms}",
		"    phases: [{at: 0s, hang: true, share: 0.2}, {at: 600ms, reset: true, share: 0.2}]",
		"  google/gemini-1.5-pro:",
		"    latency: {ttfb: 1ms, total: 3ms}",
	))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := Run(ctx, sc, ModeHTTP, []string{BaselineNaive, BaselineNaiveFailover}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, r)
	if r.Mode != ModeHTTP || r.Requests != 300 {
		t.Errorf("mode %q requests %d", r.Mode, r.Requests)
	}
	atLeast(t, "success rate", r.SuccessRate, 0.97)
	for _, tg := range []string{"anthropic/claude-3-5-sonnet", "google/gemini-1.5-pro"} {
		if r.ServedByTarget[tg] == 0 {
			t.Errorf("%s served nothing: %v", tg, r.ServedByTarget)
		}
	}
	hasBlock(t, r, "openai/gpt-4o", "retry_after")
	for reason := range r.FailuresByReason {
		switch reason {
		case "max_attempts_reached", "providers_exhausted", "budget_exhausted", "deadline":
		default:
			t.Errorf("unexpected failure reason %q: %v", reason, r.FailuresByReason)
		}
	}

	if len(r.Baselines) != 2 {
		t.Fatalf("%d baselines, want 2", len(r.Baselines))
	}
	b := r.Baselines[0]
	checkInvariants(t, b)
	if b.Policy != "naive" || b.AttemptsByTarget["openai/gpt-4o"] != b.Attempts || b.Attempts <= b.Requests {
		t.Errorf("naive: policy %q, attempts %v of %d", b.Policy, b.AttemptsByTarget, b.Attempts)
	}
	if b.Failed == 0 || b.FailuresByReason["max_attempts_reached"] != b.Failed {
		t.Errorf("naive failures %d %v: with 50%% 429s some requests fail three times", b.Failed, b.FailuresByReason)
	}

	// naive-failover: the primary three times, then the fallbacks in
	// order. A request reaches gemini only after three failures on
	// claude (hangs cut at 300 ms, resets), and gemini is healthy, so
	// nearly every request succeeds.
	f := r.Baselines[1]
	checkInvariants(t, f)
	if f.Policy != BaselineNaiveFailover || f.Requests != 300 {
		t.Errorf("naive-failover: policy %q, %d requests", f.Policy, f.Requests)
	}
	atLeast(t, "naive-failover success rate", f.SuccessRate, 0.99)
	if f.ServedByTarget["anthropic/claude-3-5-sonnet"] == 0 || f.AttemptsByTarget["openai/gpt-4o"] < f.Requests {
		t.Errorf("naive-failover: attempts %v, served %v", f.AttemptsByTarget, f.ServedByTarget)
	}
	if f.Attempts > 9*f.Requests {
		t.Errorf("naive-failover: %d attempts for %d requests, more than three per target", f.Attempts, f.Requests)
	}
	if f.SuccessRate <= b.SuccessRate {
		t.Errorf("naive-failover success %v ≤ naive %v", f.SuccessRate, b.SuccessRate)
	}
	if len(f.Blocks) != 0 {
		t.Errorf("naive-failover has blocks: %v", f.Blocks)
	}
}

// Streams over HTTP, and a run cut short by its context.
func TestHTTPModeStreamAndCancel(t *testing.T) {
	if testing.Short() {
		t.Skip("real time")
	}
	sc := mustScenario(t, "stream.yaml", doc(
		"config:",
		"  model_providers:",
		"    - model: openai/gpt-4o",
		"      retry_policy: {on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 2}]}",
		"    - model: anthropic/claude-3-5-sonnet",
		"workload: {model: openai/gpt-4o, requests: 100000, concurrency: 8, stream: true}",
		"upstreams:",
		"  openai/gpt-4o:",
		"    latency: {ttfb: 1ms, total: 3ms}",
		"    phases: [{status: 503, share: 0.3}]",
	))
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	var final Progress
	r, err := RunHTTP(ctx, sc, Options{Progress: func(p Progress) { final = p }}, BaselineNone)
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, r)
	if r.Requests == 0 || r.Requests >= 100000 {
		t.Errorf("%d requests in 600ms", r.Requests)
	}
	if !final.Final || final.Done != r.Requests {
		t.Errorf("final progress %+v, result %d requests", final, r.Requests)
	}
	// Requests cut by the cancellation fail; the others stream whole.
	if r.Succeeded < r.Requests-8 || r.ServedByTarget["anthropic/claude-3-5-sonnet"] == 0 {
		t.Errorf("succeeded %d of %d, served %v, failures %v", r.Succeeded, r.Requests, r.ServedByTarget, r.FailuresByReason)
	}
}

// An upstream over its capacity sheds attempts over HTTP too: with 8
// requests in flight and room for one, the primary answers most of them
// with 503 and the secondary serves them.
func TestHTTPModeCapacity(t *testing.T) {
	if testing.Short() {
		t.Skip("real time")
	}
	sc := mustScenario(t, "http-capacity.yaml", doc(
		"config:",
		"  model_providers:",
		"    - model: openai/gpt-4o",
		"      retry_policy: {on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 2}]}",
		"    - model: anthropic/claude-3-5-sonnet",
		"  engine: {retry_budget: {enabled: false}}",
		"workload: {model: openai/gpt-4o, requests: 80, concurrency: 8, timeout: 5s}",
		"upstreams:",
		"  openai/gpt-4o: {capacity: 1, latency: {ttfb: 20ms, total: 30ms}}",
		"  anthropic/claude-3-5-sonnet: {latency: {ttfb: 1ms, total: 2ms}}",
	))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := Run(ctx, sc, ModeHTTP, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, r)
	if r.Succeeded != 80 || r.ServedByTarget["anthropic/claude-3-5-sonnet"] == 0 {
		t.Errorf("succeeded %d, served %v: want the shed attempts served by the secondary", r.Succeeded, r.ServedByTarget)
	}
}

// A run cut short by its context while the gateway is still failing over:
// the attempts its requests make after the load has stopped reach the
// upstreams during the shutdown, and the result counts every one of them,
// in its totals and in its series alike. Each short run ends with up to 32
// requests between a 503 and their retry; one run rarely has a late
// attempt, several in a row nearly always do.
func TestHTTPModeCancelCountsLateAttempts(t *testing.T) {
	if testing.Short() {
		t.Skip("real time")
	}
	sc := mustScenario(t, "late.yaml", doc(
		"config:",
		"  model_providers:",
		"    - model: openai/gpt-4o",
		"      retry_policy: {on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 2}]}",
		"    - model: anthropic/claude-3-5-sonnet",
		"  engine: {retry_budget: {enabled: false}}",
		"workload: {model: openai/gpt-4o, requests: 100000, concurrency: 32}",
		"upstreams:",
		"  openai/gpt-4o: {latency: {ttfb: 1ms, total: 1ms}, phases: [{status: 503}]}",
		"  anthropic/claude-3-5-sonnet: {latency: {ttfb: 1ms, total: 2ms}}",
	))
	for range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		r, err := RunHTTP(ctx, sc, Options{}, BaselineNone)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		checkInvariants(t, r)
		if t.Failed() {
			return
		}
	}
}
