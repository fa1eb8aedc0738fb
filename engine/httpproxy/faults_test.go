package httpproxy

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const timeoutPolicy = `{on_timeout: {strategy: different_provider, max_attempts: 2}}`

// Faults before the first byte of an answer: each costs one failed
// attempt of the timeout class, and the request fails over.
func TestFaultsBeforeCommit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		timeouts string // the primary's timeouts
		primary  func(gate <-chan struct{}) reply
		stream   bool
		atLeast  time.Duration
	}{
		{
			name:    "connection reset before headers",
			primary: func(<-chan struct{}) reply { return reset() },
		},
		{
			name:     "an upstream that never answers",
			timeouts: `{headers: 200ms}`,
			primary:  func(gate <-chan struct{}) reply { return hang(gate) },
			atLeast:  200 * time.Millisecond,
		},
		{
			// The first token would come after 2 s; the upstream waits
			// on a channel the test releases only at cleanup.
			name:     "first token later than first_token",
			timeouts: `{first_token: 200ms}`,
			primary: func(gate <-chan struct{}) reply {
				return sse(gate, append([]string{""}, streamOf("gpt-4o", "late")...)...)
			},
			stream:  true,
			atLeast: 200 * time.Millisecond,
		},
		{
			name:    "a stream that ends before its first event",
			primary: func(<-chan struct{}) reply { return sse(nil) },
			stream:  true,
		},
		{
			name: "a stream cut before its first event",
			primary: func(<-chan struct{}) reply {
				return cut(sse(nil, `data: {"id":"chatcmpl-9zX1","object":"chat.completion.chunk"`))
			},
			stream: true,
		},
		{
			name:    "a malformed first event",
			primary: func(<-chan struct{}) reply { return sse(nil, "<html>502 Bad Gateway</html>\n\n") },
			stream:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gate := make(chan struct{})
			t.Cleanup(func() { close(gate) })
			secondary := okJSON("claude-3-5-sonnet")
			if tt.stream {
				secondary = sse(nil, streamOf("claude-3-5-sonnet", "Hi")...)
			}
			cfg := `
model_providers:
  - model: openai/gpt-4o
    retry_policy: ` + timeoutPolicy + `
    timeouts: ` + or(tt.timeouts, "{}") + `
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
`
			f := newFixture(t, cfg, map[string][]reply{gpt: {tt.primary(gate)}, claude: {secondary}})
			body := chatBody("gpt-4o")
			if tt.stream {
				body = `{"model":"gpt-4o","stream":true,"messages":[]}`
			}
			start := time.Now()
			resp, answer := f.call(body)
			took := time.Since(start)
			if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != claude || resp.Header.Get("X-Reroute-Attempts") != "2" {
				t.Fatalf("status %d, target %q, attempts %q; body %s", resp.StatusCode,
					resp.Header.Get("X-Reroute-Target"), resp.Header.Get("X-Reroute-Attempts"), answer)
			}
			if tt.stream && answer != strings.Join(streamOf("claude-3-5-sonnet", "Hi"), "") {
				t.Errorf("stream = %q: want the secondary's alone", answer)
			}
			if took < tt.atLeast {
				t.Errorf("took %v, want at least %v", took, tt.atLeast)
			}
			f.wantCalls(map[string]int{gpt: 1, claude: 1})
		})
	}
}

// When every target fails without an answer, the exhaustion renders 504;
// the reset renders as a transport error, the headers timeout as a timeout
// with its duration.
func TestTimeoutExhaustion(t *testing.T) {
	t.Parallel()
	cfg := `
model_providers:
  - model: openai/gpt-4o
    retry_policy: ` + timeoutPolicy + `
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
engine: {timeouts: {headers: 100ms}}
`
	f := newFixture(t, cfg, map[string][]reply{gpt: {reset()}, claude: {hang(nil)}})
	resp, body := f.call(chatBody("gpt-4o"))
	if resp.StatusCode != 504 || resp.Header.Get("X-Reroute-Attempts") != "2" {
		t.Fatalf("status %d, attempts %q: %s", resp.StatusCode, resp.Header.Get("X-Reroute-Attempts"), body)
	}
	ex := decodeExhausted(t, body)
	if ex.Message != "All retry attempts exhausted: upstream request timed out" || len(ex.Attempts) != 2 ||
		ex.Attempts[0].ErrorType != "transport_error" || !strings.HasPrefix(ex.Attempts[1].ErrorType, "timeout_") {
		t.Errorf("body = %s", body)
	}
}

// Faults after commit: the client has the events relayed so far, then an
// in-band error event, and no [DONE]; the engine is told with Result.End.
func TestFaultsAfterCommit(t *testing.T) {
	t.Parallel()
	first := streamOf("gpt-4o", "Hel", "lo")[:2]
	tests := []struct {
		name     string
		timeouts string
		primary  func(gate <-chan struct{}) reply
		code     string
	}{
		{
			name:    "a stream cut after two events",
			primary: func(<-chan struct{}) reply { return cut(sse(nil, first...)) },
			code:    "upstream_stream_cut",
		},
		{
			name:     "a stall mid-stream past idle",
			timeouts: `{idle: 200ms}`,
			primary: func(gate <-chan struct{}) reply {
				return sse(gate, append(append([]string{}, first...), "", done)...)
			},
			code: "upstream_idle_timeout",
		},
		{
			name: "more malformed lines than MaxMalformedEvents",
			primary: func(<-chan struct{}) reply {
				return sse(nil, first[0], first[1], strings.Repeat("this is not SSE\n\n", MaxMalformedEvents+1), done)
			},
			code: "upstream_stream_malformed",
		},
		{
			name: "more data that is not JSON than MaxMalformedEvents",
			primary: func(<-chan struct{}) reply {
				return sse(nil, first[0], first[1], strings.Repeat("data: {\"choices\": [\n\n", MaxMalformedEvents+1), done)
			},
			code: "upstream_stream_malformed",
		},
		{
			// A finish_reason makes a stream without [DONE] complete;
			// a cut after it is still a cut.
			name:    "a stream cut after its finish_reason",
			primary: func(<-chan struct{}) reply { return cut(sse(nil, first[0], first[1], finish("gpt-4o", 0))) },
			code:    "upstream_stream_cut",
		},
		{
			name:     "a stall past idle after the finish_reason",
			timeouts: `{idle: 200ms}`,
			primary: func(gate <-chan struct{}) reply {
				return sse(gate, first[0], first[1], finish("gpt-4o", 0), "", done)
			},
			code: "upstream_idle_timeout",
		},
		{
			name: "an event longer than MaxEventBytes",
			primary: func(<-chan struct{}) reply {
				return sse(nil, first[0], first[1], "data: \""+strings.Repeat("x", MaxEventBytes)+"\"\n\n", done)
			},
			code: "upstream_response_too_large",
		},
		{
			// The idle timeout is 30 s: the end must not wait for it.
			name:    "a stream without [DONE] ends promptly",
			primary: func(<-chan struct{}) reply { return sse(nil, first...) },
			code:    "upstream_stream_incomplete",
		},
		{
			name:     "the attempt timeout cuts a stream after commit",
			timeouts: `{attempt: 300ms}`,
			primary: func(gate <-chan struct{}) reply {
				return sse(gate, append(append([]string{}, first...), "", done)...)
			},
			code: "upstream_attempt_timeout",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gate := make(chan struct{})
			t.Cleanup(func() { close(gate) })
			cfg := `
model_providers:
  - model: openai/gpt-4o
    retry_policy: ` + timeoutPolicy + `
    timeouts: ` + or(tt.timeouts, "{}") + `
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
`
			f := newFixture(t, cfg, map[string][]reply{gpt: {tt.primary(gate)}})
			start := time.Now()
			resp, answer := f.call(`{"model":"gpt-4o","stream":true,"messages":[]}`)
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("the stream took %v to end", took)
			}
			if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != gpt {
				t.Fatalf("status %d, target %q", resp.StatusCode, resp.Header.Get("X-Reroute-Target"))
			}
			if !strings.HasPrefix(answer, first[0]+first[1]) {
				t.Fatalf("stream = %q: want the two events first", answer)
			}
			rest := strings.TrimPrefix(answer[len(first[0]+first[1]):], finish("gpt-4o", 0))
			if strings.Contains(answer, "data: [DONE]") || strings.Contains(answer, "not SSE") {
				t.Errorf("stream = %q: no [DONE], no malformed bytes", answer)
			}
			var ev struct {
				Error struct {
					Type, Code, Message string
				}
			}
			if !strings.HasPrefix(rest, "data: ") || !strings.HasSuffix(rest, "\n\n") ||
				json.Unmarshal([]byte(strings.TrimSuffix(strings.TrimPrefix(rest, "data: "), "\n\n")), &ev) != nil ||
				ev.Error.Code != tt.code || ev.Error.Type != "upstream_error" {
				t.Errorf("after the events: %q, want one error event with code %s", rest, tt.code)
			}
			f.wantCalls(map[string]int{gpt: 1, claude: 0})
			if n := f.failures(gpt); n != 1 {
				t.Errorf("engine failures of %s = %d, want 1 (Result.End)", gpt, n)
			}
		})
	}
}

// A stream that ends cleanly without [DONE] after every choice's
// finish_reason is a complete answer: the client gets every event and the
// [DONE] the upstream left out, no error event, and the target no failure.
// Without a finish_reason for every choice index seen it stays a cut.
func TestStreamWithoutDone(t *testing.T) {
	t.Parallel()
	const m = "gpt-4o"
	usage := streamOf(m)[0]
	tests := []struct {
		name     string
		events   []string
		complete bool
	}{
		{"the finish_reason chunk, then the end", []string{chunk(m, "Hel"), chunk(m, "lo"), finish(m, 0)}, true},
		{"the finish_reason chunk, a usage chunk, then the end", []string{chunk(m, "Hel"), finish(m, 0), usage}, true},
		{"a finish_reason in the first and only event", []string{finish(m, 0)}, true},
		{"n=2, both choices finished", []string{choiceChunk(m, 0, "a"), choiceChunk(m, 1, "b"), finish(m, 1), finish(m, 0)}, true},
		{"n=2, one choice unfinished", []string{choiceChunk(m, 0, "a"), choiceChunk(m, 1, "b"), finish(m, 0)}, false},
		{"no finish_reason", []string{chunk(m, "Hel"), chunk(m, "lo"), usage}, false},
		{"an empty finish_reason is none", []string{chunk(m, "Hel"), strings.Replace(finish(m, 0), `"stop"`, `""`, 1)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, twoTargets(timeoutPolicy), map[string][]reply{gpt: {sse(nil, tt.events...)}})
			resp, answer := f.call(`{"model":"gpt-4o","stream":true,"messages":[]}`)
			events := strings.Join(tt.events, "")
			if resp.StatusCode != 200 || !strings.HasPrefix(answer, events) {
				t.Fatalf("status %d, stream %q: want the upstream's events first", resp.StatusCode, answer)
			}
			rest, failures := answer[len(events):], f.failures(gpt)
			switch {
			case tt.complete && (rest != done || failures != 0):
				t.Errorf("after the events: %q, engine failures %d; want [DONE] alone and no failure", rest, failures)
			case !tt.complete && (!strings.Contains(rest, `"code":"upstream_stream_incomplete"`) || strings.Contains(rest, done) || failures != 1):
				t.Errorf("after the events: %q, engine failures %d; want the upstream_stream_incomplete event and one failure", rest, failures)
			}
			f.wantCalls(map[string]int{gpt: 1, claude: 0})
		})
	}
}

// A few malformed events in an otherwise healthy stream are skipped: the
// client gets every other event and the [DONE], the target no failure, and
// each skipped event is counted (StreamHooks.Malformed) and logged at debug
// with the target and the request id.
func TestMalformedEventsSkipped(t *testing.T) {
	t.Parallel()
	const m = "gpt-4o"
	var good []string
	for i := range 60 {
		good = append(good, chunk(m, "t"+itoa(i)))
	}
	good = append(good, finish(m, 0))
	truncated := `data: {"id":"chatcmpl-9zX1","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"lo` + "\n\n"
	notSSE := "<html>\n<body>502</body>\n\n"
	tests := []struct {
		name   string
		events []string // the upstream's
		bad    int      // malformed among them
	}{
		{"truncated JSON after 10 tokens", slices.Concat(good[:10], []string{truncated}, good[10:], []string{done}), 1},
		{"lines that are not SSE fields, with their event", slices.Concat(good[:10], []string{notSSE, "data: {\"a\":1}\nnot a field\n\n"}, good[10:], []string{done}), 2},
		{"MaxMalformedEvents of them, then an end without [DONE]", slices.Concat(good[:30], slices.Repeat([]string{truncated}, MaxMalformedEvents), good[30:]), MaxMalformedEvents},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zap.DebugLevel)
			var mu sync.Mutex
			var counted []string
			hooks := StreamHooks{Malformed: func(target string) {
				mu.Lock()
				defer mu.Unlock()
				counted = append(counted, target)
			}}
			f := newFixture(t, twoTargets(timeoutPolicy), map[string][]reply{gpt: {sse(nil, tt.events...)}},
				WithLogger(zap.New(core)), WithStreamHooks(hooks))
			resp, answer := f.call(`{"model":"gpt-4o","stream":true,"messages":[]}`, "X-Request-Id", "req-malformed-1")
			if want := strings.Join(good, "") + done; resp.StatusCode != 200 || answer != want {
				t.Errorf("status %d, stream %q\nwant every good event and [DONE] alone", resp.StatusCode, answer)
			}
			if n := f.failures(gpt); n != 0 {
				t.Errorf("engine failures = %d, want 0", n)
			}
			mu.Lock()
			if len(counted) != tt.bad || (tt.bad > 0 && counted[0] != gpt) {
				t.Errorf("Malformed called with %q, want %s %d times", counted, gpt, tt.bad)
			}
			mu.Unlock()
			entries := logs.FilterMessage("reroute skipped a malformed stream event").All()
			if len(entries) != tt.bad {
				t.Fatalf("logged %d skipped events, want %d", len(entries), tt.bad)
			}
			if fields := entries[0].ContextMap(); entries[0].Level != zap.DebugLevel || fields["target"] != gpt || fields["request_id"] != "req-malformed-1" {
				t.Errorf("log entry %v %v", entries[0].Level, fields)
			}
			f.wantCalls(map[string]int{gpt: 1, claude: 0})
		})
	}
}

// An event the upstream names "error" is its error whatever its payload:
// after commit it is relayed and ends the stream, never skipped as
// malformed.
func TestNamedErrorEventIsNotSkipped(t *testing.T) {
	t.Parallel()
	events := []string{chunk("gpt-4o", "Partial"), "event: error\ndata: overloaded\n\n"}
	f := newFixture(t, twoTargets(timeoutPolicy), map[string][]reply{gpt: {sse(nil, append(events, finish("gpt-4o", 0), done)...)}})
	resp, answer := f.call(`{"model":"gpt-4o","stream":true,"messages":[]}`)
	if resp.StatusCode != 200 || answer != strings.Join(events, "") {
		t.Errorf("status %d, stream %q: want the events up to the upstream's error, as sent", resp.StatusCode, answer)
	}
	if n := f.failures(gpt); n != 1 {
		t.Errorf("engine failures = %d, want 1", n)
	}
}

// An upstream error event after commit is relayed as the upstream sent it
// and ends the stream; one as the first event is a failed attempt, retried
// before anything reaches the client.
func TestStreamErrorEvents(t *testing.T) {
	t.Parallel()
	overloaded := "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
	serverError := `data: {"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}` + "\n\n"
	t.Run("first event", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, twoTargets(`{on_status_codes: [{codes: [529], strategy: different_provider, max_attempts: 2}]}`),
			map[string][]reply{gpt: {sse(nil, ": keep-alive\n\n", overloaded)}, claude: {sse(nil, streamOf("claude-3-5-sonnet", "Hi")...)}})
		resp, answer := f.call(`{"model":"gpt-4o","stream":true,"messages":[]}`)
		if resp.Header.Get("X-Reroute-Target") != claude || answer != strings.Join(streamOf("claude-3-5-sonnet", "Hi"), "") {
			t.Errorf("target %q, stream %q", resp.Header.Get("X-Reroute-Target"), answer)
		}
		f.wantCalls(map[string]int{gpt: 1, claude: 1})
	})
	t.Run("after commit", func(t *testing.T) {
		t.Parallel()
		events := []string{chunk("gpt-4o", "Partial"), serverError}
		f := newFixture(t, twoTargets(timeoutPolicy), map[string][]reply{gpt: {sse(nil, events...)}})
		resp, answer := f.call(`{"model":"gpt-4o","stream":true,"messages":[]}`)
		if resp.StatusCode != 200 || answer != strings.Join(events, "") {
			t.Errorf("status %d, stream %q: want the upstream's events as sent", resp.StatusCode, answer)
		}
		if n := f.failures(gpt); n != 1 {
			t.Errorf("engine failures = %d, want 1", n)
		}
	})
}

// Comments and pings are relayed but are not tokens: a stream that sends
// only keep-alives after its first event stalls past idle.
func TestKeepAlivesAreNotTokens(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	ev := chunk("gpt-4o", "Hi")
	ka := ": keep-alive\n\n"
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
    timeouts: {idle: 300ms}
`, map[string][]reply{gpt: {keepAlive(gate, ev, ka)}})
	resp, answer := f.call(`{"model":"gpt-4o","stream":true,"messages":[]}`)
	if resp.StatusCode != 200 || !strings.HasPrefix(answer, ev+ka) || !strings.Contains(answer, "upstream_idle_timeout") {
		t.Errorf("stream = %q", answer)
	}
}

// keepAlive sends ev, then ka every 50 ms until the request ends.
func keepAlive(gate <-chan struct{}, ev, ka string) reply {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ev)
		w.(http.Flusher).Flush()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				io.WriteString(w, ka)
				w.(http.Flusher).Flush()
			case <-gate:
				return
			case <-r.Context().Done():
				return
			}
		}
	}
}

// Persistent 503: the primary is retried a bounded number of times
// (same_model_retries), then the request falls back.
func TestPersistent503(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      same_model_retries: 2
      on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 4}]
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
`, map[string][]reply{gpt: {respond(503, openai503)}})
	resp, body := f.call(chatBody("gpt-4o"))
	if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != claude || resp.Header.Get("X-Reroute-Attempts") != "4" {
		t.Errorf("status %d, target %q, attempts %q: %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), resp.Header.Get("X-Reroute-Attempts"), body)
	}
	f.wantCalls(map[string]int{gpt: 3, claude: 1})
}

// Error bodies refine the status: content policy and context length, in
// OpenAI, Azure and Anthropic shapes, with the handler's options.
func TestErrorBodies(t *testing.T) {
	t.Parallel()
	const (
		contextOpenAI    = `{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130912 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`
		contextAnthropic = `{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 205351 tokens > 200000 maximum"},"request_id":"req_011CV5J4YZo4J3KLTDZg0000"}`
		policyOpenAI     = `{"error":{"message":"Invalid prompt: your prompt was flagged as potentially violating our usage policy. Please try again with a different prompt: https://platform.openai.com/docs/guides/reasoning#advice-on-prompting","type":"invalid_request_error","param":null,"code":"invalid_prompt"}}`
		policyAzure      = `{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"violence":{"filtered":true,"severity":"medium"}}}}}`
		plain400         = `{"error":{"message":"Invalid value for 'temperature': must be between 0 and 2.","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}`
	)
	failover400 := twoTargets(`{on_status_codes: [{codes: [400], strategy: different_provider, max_attempts: 2}]}`)
	tests := []struct {
		name    string
		config  string
		opts    []Option
		primary reply
		status  int
		target  string
		calls   map[string]int
		body    string // the exact body expected, when returned as is
	}{
		{
			name: "context length (OpenAI): one primary attempt, then the fallback", config: failover400,
			primary: respond(400, contextOpenAI), status: 200, target: claude, calls: map[string]int{gpt: 1, claude: 1},
		},
		{
			name: "context length is never retried on the same model",
			config: `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      same_model_retries: 3
      on_status_codes: [{codes: [400], strategy: different_provider, max_attempts: 5}]
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
`,
			primary: respond(400, contextAnthropic), status: 200, target: claude, calls: map[string]int{gpt: 1, claude: 1},
		},
		{
			name: "context length with WithContextLengthFailover(false): returned as is", config: failover400,
			opts:    []Option{WithContextLengthFailover(false)},
			primary: respond(400, contextOpenAI), status: 400, target: gpt, calls: map[string]int{gpt: 1, claude: 0}, body: contextOpenAI,
		},
		{
			name: "content policy (OpenAI): exactly one attempt, returned as is", config: failover400,
			primary: respond(400, policyOpenAI), status: 400, target: gpt, calls: map[string]int{gpt: 1, claude: 0}, body: policyOpenAI,
		},
		{
			name: "content policy (Azure)", config: failover400,
			primary: respond(400, policyAzure), status: 400, target: gpt, calls: map[string]int{gpt: 1, claude: 0}, body: policyAzure,
		},
		{
			name: "content policy with WithContentPolicyFailover(true)", config: failover400,
			opts:    []Option{WithContentPolicyFailover(true)},
			primary: respond(400, policyOpenAI), status: 200, target: claude, calls: map[string]int{gpt: 1, claude: 1},
		},
		{
			name: "x-should-retry: false rules out the provider, not a failover", config: twoTargets(`{on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 2}]}`),
			primary: respond(503, openai503, "X-Should-Retry", "false"), status: 200, target: claude, calls: map[string]int{gpt: 1, claude: 1},
		},
		{
			name: "x-should-retry: false with nowhere else to go ends the request", config: twoTargets(`{on_status_codes: [{codes: [503], strategy: same_model, max_attempts: 3}]}`),
			primary: respond(503, openai503, "X-Should-Retry", "false"), status: 503, calls: map[string]int{gpt: 1, claude: 0},
		},
		{
			name: "another 400 follows the policy", config: failover400,
			primary: respond(400, plain400), status: 200, target: claude, calls: map[string]int{gpt: 1, claude: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.config, map[string][]reply{gpt: {tt.primary}}, tt.opts...)
			resp, body := f.call(chatBody("gpt-4o"))
			if resp.StatusCode != tt.status || resp.Header.Get("X-Reroute-Target") != tt.target {
				t.Errorf("status %d, target %q; want %d from %q; body %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), tt.status, tt.target, body)
			}
			if tt.body != "" && body != tt.body {
				t.Errorf("body = %s\nwant the upstream's %s", body, tt.body)
			}
			f.wantCalls(tt.calls)
		})
	}
}

// x-should-retry: false on an exhausted quota means "do not retry this
// provider": the request fails over to another provider at once, without
// a same-target retry, instead of failing.
func TestShouldRetryFalseFailsOver(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      default_strategy: different_provider
      default_max_attempts: 3
      same_model_retries: 2
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
`, map[string][]reply{gpt: {respond(429, openaiQuota429, "X-Should-Retry", "false", "X-Request-Id", "req_4c1b8a6e7f1c2a9e0b4d")}})
	resp, body := f.call(chatBody("gpt-4o"))
	if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != claude || resp.Header.Get("X-Reroute-Attempts") != "2" ||
		!strings.Contains(body, `"model":"claude-3-5-sonnet"`) {
		t.Errorf("status %d, target %q, attempts %q: %s; want the fallback's answer after 2 attempts",
			resp.StatusCode, resp.Header.Get("X-Reroute-Target"), resp.Header.Get("X-Reroute-Attempts"), body)
	}
	f.wantCalls(map[string]int{gpt: 1, claude: 1})
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// stuckTransport never connects: it waits for the request's context, as
// a dial to a silent address would.
type stuckTransport struct{}

func (stuckTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	<-r.Context().Done()
	return nil, r.Context().Err()
}

// The connect phase is bounded even with a transport of the host's, and
// the failure is logged with the phase, never with credentials or bodies.
func TestConnectTimeout(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zap.DebugLevel)
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
    timeouts: {connect: 100ms}
`, nil, WithTransport(stuckTransport{}), WithLogger(zap.New(core)))
	start := time.Now()
	resp, body := f.call(chatBody("gpt-4o"))
	if resp.StatusCode != 504 || time.Since(start) < 100*time.Millisecond {
		t.Errorf("status %d after %v: %s", resp.StatusCode, time.Since(start), body)
	}
	entries := logs.FilterMessage("reroute upstream attempt failed").All()
	if len(entries) != 1 {
		t.Fatalf("logged %d attempt failures", len(entries))
	}
	fields := entries[0].ContextMap()
	if !strings.Contains(fields["error"].(string), "connect timeout") || fields["target"] != gpt || len(fields["body_sha256"].(string)) != 64 {
		t.Errorf("log fields %v", fields)
	}
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			if s, ok := v.(string); ok && (strings.Contains(s, keys[gpt]) || strings.Contains(s, "Say hello")) {
				t.Errorf("log field %s carries a credential or the body: %q", k, s)
			}
		}
	}
}

// engine.timeouts.attempt, which the engine applies, cuts an attempt
// before commit like any other timeout.
func TestAttemptTimeoutBeforeCommit(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy: `+timeoutPolicy+`
  - model: anthropic/claude-3-5-sonnet
    provider_interface: anthropic
engine: {timeouts: {attempt: 200ms}}
`, map[string][]reply{gpt: {hang(nil)}})
	resp, body := f.call(chatBody("gpt-4o"))
	if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != claude {
		t.Errorf("status %d, target %q: %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), body)
	}
	f.wantCalls(map[string]int{gpt: 1, claude: 1})
}

// A response that is not a stream and exceeds WithMaxResponseBytes is
// relayed after commit; if it is cut then, the client's response is
// aborted, never ended cleanly.
func TestLargeBody(t *testing.T) {
	t.Parallel()
	big := `{"id":"chatcmpl-1","model":"gpt-4o","choices":[{"message":{"content":"` + strings.Repeat("x", 5000) + `"}}]}`
	half := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", itoa(len(big)))
		io.WriteString(w, big[:2500])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
`, map[string][]reply{gpt: {respond(200, big), half}}, WithMaxResponseBytes(100))
	resp, body := f.call(chatBody("gpt-4o"))
	if resp.StatusCode != 200 || body != big {
		t.Errorf("status %d, %d bytes; want the whole body", resp.StatusCode, len(body))
	}
	resp = f.post(chatBody("gpt-4o"))
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Errorf("a cut body read cleanly (%d bytes)", len(b))
	}
	if n := f.failures(gpt); n != 1 {
		t.Errorf("engine failures = %d, want 1", n)
	}
}

// A client that goes away mid-stream ends the upstream request too, and
// is not counted as a failure of the target.
func TestClientGoneMidStream(t *testing.T) {
	t.Parallel()
	gone := make(chan struct{})
	ev := chunk("gpt-4o", "Hi")
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
`, map[string][]reply{gpt: {func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ev)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // the gateway must end this request
		close(gone)
	}}})
	resp := f.post(`{"model":"gpt-4o","stream":true,"messages":[]}`)
	if got := readEvent(t, bufio.NewReader(resp.Body)); got != ev {
		t.Fatalf("first event %q", got)
	}
	resp.Body.Close() // the client hangs up
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request outlived the client")
	}
	if n := f.failures(gpt); n != 0 {
		t.Errorf("engine failures = %d, want 0: the client left, the target did not fail", n)
	}
}

// A target without retry_policy delivers its failed attempt as the
// answer: a 502 whose code says what went wrong, not "unreachable" for an
// upstream that answered badly.
func TestFailuresBeforeCommitSayWhat(t *testing.T) {
	t.Parallel()
	const limit = 4 << 10
	body := completion("gpt-4o")
	tests := []struct {
		name    string
		primary reply
		code    string
	}{
		{"no answer at all", reset(), "upstream_unreachable"},
		{"a body cut before its end", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", itoa(len(body)))
			io.WriteString(w, body[:len(body)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}, "upstream_body_cut"},
		{"a malformed stream", sse(nil, "<html>502 Bad Gateway</html>\n\n"), "upstream_stream_malformed"},
		{"a stream cut before its first event", cut(sse(nil, `data: {"id":"chatcmpl-9zX1"`)), "upstream_stream_cut"},
		{"a stream that ends before its first event", sse(nil), "upstream_stream_empty"},
		{"more keep-alives than the response limit before the first event", sse(nil, strings.Repeat(": keep-alive\n\n", limit/14+1), chunk("gpt-4o", "late"), done), "upstream_response_too_large"},
		{"a line longer than MaxEventBytes before the first event", sse(nil, "data: \""+strings.Repeat("x", MaxEventBytes)+"\"\n\n", done), "upstream_response_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
`, map[string][]reply{gpt: {tt.primary}}, WithMaxResponseBytes(limit))
			resp, answer := f.call(`{"model":"gpt-4o","stream":true,"messages":[]}`)
			if resp.StatusCode != http.StatusBadGateway || errorCode(t, answer) != tt.code {
				t.Errorf("status %d: %s; want 502 %s", resp.StatusCode, answer, tt.code)
			}
			if strings.Contains(answer, "Bad Gateway</html>") || strings.Contains(answer, "keep-alive") {
				t.Errorf("upstream bytes reached the client: %s", answer)
			}
		})
	}
}

// EndStreams ends a stream being relayed with the in-band
// gateway_shutting_down event and no [DONE], and does not blame the
// target.
func TestEndStreams(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	defer close(gate)
	ev := chunk("gpt-4o", "Hi")
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
`, map[string][]reply{gpt: {sse(gate, ev, "", done)}})
	resp := f.post(`{"model":"gpt-4o","stream":true,"messages":[]}`)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if got := readEvent(t, br); got != ev {
		t.Fatalf("first event %q", got)
	}
	f.h.EndStreams()
	rest, err := io.ReadAll(br)
	if err != nil || !strings.HasPrefix(string(rest), "data: ") || !strings.Contains(string(rest), `"code":"gateway_shutting_down"`) || strings.Contains(string(rest), "[DONE]") {
		t.Errorf("after EndStreams: %q, %v", rest, err)
	}
	if n := f.failures(gpt); n != 0 {
		t.Errorf("engine failures = %d, want 0: the gateway ended the stream", n)
	}
}

// A body that is not a stream and is cut halfway is a failed attempt,
// retried before anything reaches the client: the client gets the
// fallback's answer and 200, whether the cut body had a content-length or
// was chunked.
func TestCutBodyFailsOver(t *testing.T) {
	t.Parallel()
	body := completion("gpt-4o")
	tests := []struct {
		name    string
		primary reply
	}{
		{"content-length", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", itoa(len(body)))
			io.WriteString(w, body[:len(body)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}},
		{"chunked", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body[:len(body)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}},
		// Neither a length nor chunks: the body ends when the connection
		// closes, so a cut looks like a clean end, but the JSON does not
		// parse.
		{"close-delimited", func(w http.ResponseWriter, r *http.Request) {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				panic(err)
			}
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + body[:len(body)/2])
			buf.Flush()
			conn.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, twoTargets(timeoutPolicy), map[string][]reply{gpt: {tt.primary}})
			resp, answer := f.call(chatBody("gpt-4o"))
			if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != claude || answer != completion("claude-3-5-sonnet") {
				t.Errorf("status %d, target %q, body %s; want the fallback's answer", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), answer)
			}
			f.wantCalls(map[string]int{gpt: 1, claude: 1})
		})
	}
}
