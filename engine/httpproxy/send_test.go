package httpproxy

import (
	"errors"
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
