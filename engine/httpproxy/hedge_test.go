package httpproxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// hedged is gpt-4o hedged to claude after 200 ms. The tests below assert
// which target answered and what was cancelled, never how long it took,
// so the real clock is fine.
func hedged(extra string) string {
	return `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      hedge: {delay_ms: 200}` + extra + `
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
`
}

// noted wraps a reply: it closes arrived when the request comes in and
// ended when the server sees the request's context end.
func noted(arrived, ended chan struct{}, inner reply) reply {
	return func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		defer func() {
			<-r.Context().Done()
			close(ended)
		}()
		inner(w, r)
	}
}

// awaitClosed waits for c to be closed, failing the test after a long while.
func awaitClosed(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not happen", what)
	}
}

// TestHedgeSlowFirstEvent: the primary sends its headers at once and its
// first event only when the test ends (it would be 20 s and more); the
// hedge to claude answers and is delivered, and the primary's connection
// is cancelled: its server sees the request's context end.
func TestHedgeSlowFirstEvent(t *testing.T) {
	for _, stream := range []bool{true, false} {
		name := "json"
		if stream {
			name = "stream"
		}
		t.Run(name, func(t *testing.T) {
			arrived, ended := make(chan struct{}), make(chan struct{})
			var f *fixture
			slow := func(w http.ResponseWriter, r *http.Request) {
				if stream {
					sse(f.release, append([]string{""}, streamOf("gpt-4o", "slow")...)...)(w, r)
					return
				}
				select {
				case <-f.release:
				case <-r.Context().Done():
					return
				}
				okJSON("gpt-4o")(w, r)
			}
			fast := okJSON("claude-3-5-sonnet")
			if stream {
				fast = sse(nil, streamOf("claude-3-5-sonnet", "Hello")...)
			}
			f = newFixture(t, hedged(""), map[string][]reply{
				gpt:    {noted(arrived, ended, slow)},
				claude: {fast},
			})
			body := chatBody("openai/gpt-4o")
			if stream {
				body = strings.Replace(body, `"temperature"`, `"stream": true, "temperature"`, 1)
			}
			resp, got := f.call(body)
			if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != claude || resp.Header.Get("X-Reroute-Attempts") != "2" {
				t.Fatalf("status %d target %q attempts %q: %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), resp.Header.Get("X-Reroute-Attempts"), got)
			}
			if !strings.Contains(got, "claude-3-5-sonnet") || strings.Contains(got, "slow") {
				t.Fatalf("body is not claude's alone: %s", got)
			}
			awaitClosed(t, arrived, "the primary's request")
			awaitClosed(t, ended, "the cancellation of the primary's request")
			f.wantCalls(map[string]int{gpt: 1, claude: 1})
			f.sync()
			if n := f.failures(gpt); n != 0 {
				t.Fatalf("the abandoned primary counted %d failures", n)
			}
		})
	}
}

// TestHedgeLosesOverHTTP: the primary answers once the hedge has reached
// claude, whose answer never comes: the primary is delivered and the
// hedge's connection cancelled.
func TestHedgeLosesOverHTTP(t *testing.T) {
	hedgeIn, hedgeEnded := make(chan struct{}), make(chan struct{})
	var f *fixture
	primary := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hedgeIn:
		case <-r.Context().Done():
			return
		}
		okJSON("gpt-4o")(w, r)
	}
	f = newFixture(t, hedged(""), map[string][]reply{
		gpt:    {primary},
		claude: {noted(hedgeIn, hedgeEnded, func(w http.ResponseWriter, r *http.Request) { hang(f.release)(w, r) })},
	})
	resp, got := f.call(chatBody("openai/gpt-4o"))
	if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != gpt || resp.Header.Get("X-Reroute-Attempts") != "2" {
		t.Fatalf("status %d target %q attempts %q: %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), resp.Header.Get("X-Reroute-Attempts"), got)
	}
	if !strings.Contains(got, `"model":"gpt-4o"`) {
		t.Fatalf("body %s", got)
	}
	awaitClosed(t, hedgeEnded, "the cancellation of the hedge's request")
}

// TestHedgePrimaryFailsOverHTTP: the primary's 503 while the hedge runs
// leaves the hedge to answer; both are listed as attempts.
func TestHedgePrimaryFailsOverHTTP(t *testing.T) {
	hedgeIn := make(chan struct{})
	var f *fixture
	primary := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hedgeIn:
		case <-r.Context().Done():
			return
		}
		respond(503, openai503)(w, r)
	}
	gate := make(chan struct{})
	f = newFixture(t, hedged(""), map[string][]reply{
		gpt: {primary},
		claude: {func(w http.ResponseWriter, r *http.Request) {
			close(hedgeIn)
			select {
			case <-gate:
			case <-f.release:
			}
			okJSON("claude-3-5-sonnet")(w, r)
		}},
	})
	done := make(chan struct{})
	var resp *http.Response
	var got string
	go func() {
		defer close(done)
		r := f.post(chatBody("openai/gpt-4o"))
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		resp, got = r, string(b)
	}()
	awaitClosed(t, hedgeIn, "the hedge")
	// The primary fails now; the hedge is released only once its failure
	// is counted, so that the order is sure.
	for f.failures(gpt) == 0 {
		f.sync()
		select {
		case <-done:
			t.Fatal("answered before the hedge did")
		default:
		}
	}
	close(gate)
	awaitClosed(t, done, "the answer")
	if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != claude || resp.Header.Get("X-Reroute-Attempts") != "2" {
		t.Fatalf("status %d target %q attempts %q: %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), resp.Header.Get("X-Reroute-Attempts"), got)
	}
}
