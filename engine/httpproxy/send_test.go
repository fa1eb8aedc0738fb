package httpproxy

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/reroute-go/reroute/engine"
)

// A failed HTTP answer reports how long it took: the exhaustion's attempt
// carries the time until the error body (or the error event of a stream)
// was read, not 0.
func TestFailedAnswerLatency(t *testing.T) {
	t.Parallel()
	const after = 300 * time.Millisecond
	overloaded := "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
	tests := []struct {
		name   string
		reply  reply
		body   string
		status int
	}{
		{name: "429 response", reply: openaiRateLimited(""), body: chatBody("gpt-4o"), status: 429},
		{name: "error as a stream's first event", reply: sse(nil, ": keep-alive\n\n", overloaded), body: `{"model":"gpt-4o","stream":true,"messages":[]}`, status: 529},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_status_codes: [{codes: [429, 529], strategy: same_model, max_attempts: 1}]
`, map[string][]reply{gpt: {delayed(after, tt.reply)}})
			_, err := f.do(tt.body)
			var ex *engine.ExhaustedError
			if !errors.As(err, &ex) || len(ex.Attempts) != 1 {
				t.Fatalf("Do = %v, want an exhaustion after one attempt", err)
			}
			if a := ex.Attempts[0]; a.Status != tt.status || a.Latency < after {
				t.Errorf("attempt %+v: want status %d and a latency of at least %v", a, tt.status, after)
			}
			f.wantCalls(map[string]int{gpt: 1})
		})
	}
}

// The overhead hook gets the gateway's own time: a request whose upstream
// answers after 300 ms and whose engine waits 1 s (a Retry-After) before
// the retry took over 1.3 s, of which the gateway's part is neither.
func TestOverheadExcludesUpstreamAndWaits(t *testing.T) {
	t.Parallel()
	var got []time.Duration
	var mu sync.Mutex
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_status_codes: [{codes: [429], strategy: same_model, max_attempts: 2}]
`, map[string][]reply{gpt: {delayed(300*time.Millisecond, openaiRateLimited("1")), okJSON("gpt-4o")}},
		WithOverheadHook(func(target string, d time.Duration) {
			mu.Lock()
			got = append(got, d)
			mu.Unlock()
			if target != gpt {
				t.Errorf("target %q", target)
			}
		}))
	start := time.Now()
	resp, body := f.call(chatBody("gpt-4o"))
	elapsed := time.Since(start)
	if resp.StatusCode != 200 || elapsed < 1300*time.Millisecond {
		t.Fatalf("status %d after %v: %s", resp.StatusCode, elapsed, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] <= 0 || got[0] > elapsed-1300*time.Millisecond+200*time.Millisecond {
		t.Fatalf("overhead %v of a %v request, want the part outside the 300 ms call and the 1 s wait", got, elapsed)
	}
}

// A short Retry-After on the target being retried under same_model_retries
// is waited out: the same target answers after the hint, and the fallback
// is never called.
func TestShortRetryAfterWaitedOut(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      default_strategy: different_provider
      default_max_attempts: 4
      same_model_retries: 2
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
`, map[string][]reply{gpt: {openaiRateLimited("2"), okJSON("gpt-4o")}})
	start := time.Now()
	resp, body := f.call(chatBody("gpt-4o"))
	if took := time.Since(start); resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != gpt || took < 1800*time.Millisecond {
		t.Fatalf("status %d from %q after %v: %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), took, body)
	}
	f.wantCalls(map[string]int{gpt: 2})
}

// A silent route: a target that accepts the connection and sends nothing
// until the headers timeout is not retried under same_model_retries; the
// fallback answers after one timeout, not three.
func TestSilentRouteNotRetried(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      default_strategy: different_provider
      default_max_attempts: 4
      same_model_retries: 2
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
engine: {timeouts: {headers: 200ms}}
`, map[string][]reply{gpt: {hang(nil)}})
	resp, body := f.call(chatBody("gpt-4o"))
	if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != claude {
		t.Fatalf("status %d from %q: %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), body)
	}
	f.wantCalls(map[string]int{gpt: 1, claude: 1}) // one headers timeout, not three
}
