package httpproxy

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
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

// A client that disconnects while a hedge races: both upstream requests
// are ended (their servers see their contexts end), and neither target
// is told a failure by passive health (one would eject it here).
func TestHedgeClientDisconnects(t *testing.T) {
	t.Parallel()
	pIn, pEnded, hIn, hEnded := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	var f *fixture
	hangs := func(w http.ResponseWriter, r *http.Request) { hang(f.release)(w, r) }
	// One failure would eject a target: none may be reported.
	f = newFixture(t, hedged("")+"engine: {passive_health: {consecutive_failures: 1}}\n", map[string][]reply{
		gpt:    {noted(pIn, pEnded, hangs)},
		claude: {noted(hIn, hEnded, hangs)},
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		resp, err := f.client.Do(f.request(chatBody("openai/gpt-4o")).WithContext(ctx))
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	awaitClosed(t, pIn, "the primary's request")
	awaitClosed(t, hIn, "the hedge's request")
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("the client's request succeeded after it was cancelled")
	}
	awaitClosed(t, pEnded, "the end of the primary's request")
	awaitClosed(t, hEnded, "the end of the hedge's request")
	f.sync()
	for _, target := range []string{gpt, claude} {
		i, _ := f.e.Compiled().Lookup(target)
		if st := f.e.Actor().Snapshot().Lookup(i, time.Now().UnixNano()); st.Ejected || st.Until != 0 {
			t.Fatalf("%s is ejected or blocked after the client left: %+v", target, st)
		}
	}
}

// With debug logs on, the two calls of a hedged request that both fail
// log their failures at once, each with the client body's SHA-256: the
// digest, computed once per request, is shared between them without a
// race (run with -race).
func TestHedgeBothFailLogged(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.DebugLevel)
	hedgeIn := make(chan struct{})
	overloaded := respond(503, `{"error":{"message":"overloaded","type":"server_error"}}`)
	f := newFixture(t, hedged(""), map[string][]reply{
		gpt: {func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-hedgeIn:
			case <-r.Context().Done():
				return
			}
			overloaded(w, r)
		}},
		claude: {func(w http.ResponseWriter, r *http.Request) { close(hedgeIn); overloaded(w, r) }},
	}, WithLogger(zap.New(core)))
	resp, _ := f.call(chatBody("openai/gpt-4o"))
	if resp.StatusCode != 503 && resp.StatusCode != 502 {
		t.Fatalf("status %d, want the exhaustion", resp.StatusCode)
	}
	sums := map[string]bool{}
	for _, e := range logs.FilterMessage("reroute upstream attempt failed").All() {
		sums[e.ContextMap()["body_sha256"].(string)] = true
	}
	if len(sums) != 1 || len(logs.FilterMessage("reroute upstream attempt failed").All()) != 2 {
		t.Fatalf("failures logged with digests %v; want both attempts, one digest", sums)
	}
}
