package httpproxy

import (
	"net/http"
	"testing"
)

// hedgedContinuable is gpt-4o hedged to mistral after 200 ms, both able
// to continue a cut stream.
const hedgedContinuable = `
model_providers:
  - model: openai/gpt-4o
    continuation: prefill
    timeouts: {idle: 2s}
    retry_policy:
      fallback_models: [mistral/mistral-large]
      default_strategy: different_provider
      default_max_attempts: 3
      on_timeout: {strategy: different_provider, max_attempts: 3}
      hedge: {delay_ms: 200}
  - model: mistral/mistral-large
    continuation: prefix
`

// A hedged request whose delivered stream is cut is continued from the
// attempt delivered: by its target first, as attempt 3 (the hedge counts),
// the loser's connection closed and never a failure; the header's
// x-reroute-attempts (2, sent with the headers) and the comment's attempt
// (3) count the same attempts.
func TestHedgedStreamContinued(t *testing.T) {
	t.Parallel()
	t.Run("the hedge won", func(t *testing.T) {
		t.Parallel()
		arrived, ended := make(chan struct{}), make(chan struct{})
		var f *fixture
		slow := func(w http.ResponseWriter, r *http.Request) {
			sse(f.release, "", chunk("gpt-4o", "slow"), done)(w, r)
		}
		f = newFixture(t, hedgedContinuable, map[string][]reply{
			gpt:  {noted(arrived, ended, slow)},
			mist: {cutStream("mistral-large", "Hel", "lo, "), sse(nil, contStream("mistral-large", "wor", "ld")...)},
		})
		resp, body := f.call(contBody)
		if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != mist || resp.Header.Get("X-Reroute-Attempts") != "2" {
			t.Fatalf("status %d, target %s, attempts %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), resp.Header.Get("X-Reroute-Attempts"))
		}
		a := readStream(t, body)
		a.seamless(t, "Hello, world", "mistral-large")
		a.continuedBy(t, ": reroute continued target=mistral/mistral-large attempt=3")
		awaitClosed(t, ended, "the cancellation of the primary's request")
		f.wantCalls(map[string]int{gpt: 1, mist: 2})
		wantBody(t, f, mist, 1, "Hello, ")
		f.sync()
		if n, m := f.failures(gpt), f.failures(mist); n != 0 || m != 1 {
			t.Fatalf("failures: %s %d (want 0: it lost), %s %d (want 1: the cut)", gpt, n, mist, m)
		}
	})
	t.Run("the hedge lost", func(t *testing.T) {
		t.Parallel()
		hedgeIn, hedgeEnded := make(chan struct{}), make(chan struct{})
		var f *fixture
		primary := func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-hedgeIn:
			case <-r.Context().Done():
				return
			}
			cutStream("gpt-4o", "Hel", "lo, ")(w, r)
		}
		f = newFixture(t, hedgedContinuable, map[string][]reply{
			gpt:  {primary, sse(nil, contStream("gpt-4o", "wor", "ld")...)},
			mist: {noted(hedgeIn, hedgeEnded, func(w http.ResponseWriter, r *http.Request) { hang(f.release)(w, r) })},
		})
		resp, body := f.call(contBody)
		if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != gpt || resp.Header.Get("X-Reroute-Attempts") != "2" {
			t.Fatalf("status %d, target %s, attempts %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), resp.Header.Get("X-Reroute-Attempts"))
		}
		a := readStream(t, body)
		a.seamless(t, "Hello, world", "gpt-4o")
		a.continuedBy(t, ": reroute continued target=openai/gpt-4o attempt=3")
		awaitClosed(t, hedgeEnded, "the cancellation of the hedge's request")
		f.wantCalls(map[string]int{gpt: 2, mist: 1})
		wantBody(t, f, gpt, 1, "Hello, ")
		f.sync()
		if n, m := f.failures(gpt), f.failures(mist); n != 1 || m != 0 {
			t.Fatalf("failures: %s %d (want 1: the cut), %s %d (want 0: it lost)", gpt, n, mist, m)
		}
	})
}
