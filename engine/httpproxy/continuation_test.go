package httpproxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/reroute-go/reroute/policy"
)

// The original answer's id and created, as chunk writes them; a
// continuation upstream answers with others, which the client never sees.
const (
	origID      = `"chatcmpl-9zX1"`
	origCreated = `1767225600`
)

// roleChunk is the first chunk of an OpenAI-style stream: the role and
// empty content.
func roleChunk(id, model string) string {
	return `data: {"id":"` + id + `","object":"chat.completion.chunk","created":1767225600,"model":"` + model +
		`","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}` + "\n\n"
}

// contStream is a continuation's complete stream as another deployment
// sends it: its own id, model and created, a role chunk, the contents, a
// finish_reason, a usage chunk, [DONE].
func contStream(model string, contents ...string) []string {
	head := `data: {"id":"chatcmpl-CONT7","object":"chat.completion.chunk","created":1767229999,"model":"` + model + `",`
	evs := []string{head + `"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}` + "\n\n"}
	for _, c := range contents {
		evs = append(evs, head+`"choices":[{"index":0,"delta":{"content":"`+c+`"},"finish_reason":null}],"usage":null}`+"\n\n")
	}
	return append(evs,
		head+`"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`+"\n\n",
		head+`"choices":[],"usage":{"prompt_tokens":19,"completion_tokens":3,"total_tokens":22}}`+"\n\n",
		done)
}

// cutStream is an answer of model that is cut after its role chunk and
// contents.
func cutStream(model string, contents ...string) reply {
	evs := []string{roleChunk("chatcmpl-9zX1", model)}
	for _, c := range contents {
		evs = append(evs, chunk(model, c))
	}
	return cut(sse(nil, evs...))
}

// answer is a stream as the client read it.
type answer struct {
	comments []string
	chunks   []map[string]json.RawMessage
	text     string
	roles    int
	finishes int
	dones    int
	errors   []string // codes of error events
	usage    []string
	afterEnd bool // an event after [DONE] or an error
}

func readStream(t *testing.T, body string) answer {
	t.Helper()
	var a answer
	r := sseReader{br: bufio.NewReader(strings.NewReader(body))}
	for {
		kind, raw, data, err := r.next()
		if err != nil {
			break
		}
		if a.dones > 0 || len(a.errors) > 0 {
			a.afterEnd = true
		}
		switch kind {
		case evNoise:
			a.comments = append(a.comments, strings.TrimSpace(string(raw)))
		case evDone:
			a.dones++
		case evError:
			var e struct{ Error struct{ Code string } }
			_ = json.Unmarshal(data, &e)
			a.errors = append(a.errors, e.Error.Code)
		case evData:
			var m map[string]json.RawMessage
			var c struct {
				Choices []struct {
					Delta struct {
						Role    *string `json:"role"`
						Content *string `json:"content"`
					} `json:"delta"`
					FinishReason *string `json:"finish_reason"`
				} `json:"choices"`
			}
			if json.Unmarshal(data, &m) != nil || json.Unmarshal(data, &c) != nil {
				t.Fatalf("chunk %q does not decode", data)
			}
			a.chunks = append(a.chunks, m)
			for _, ch := range c.Choices {
				if ch.Delta.Role != nil {
					a.roles++
				}
				if ch.Delta.Content != nil {
					a.text += *ch.Delta.Content
				}
				if ch.FinishReason != nil {
					a.finishes++
				}
			}
			if u := m["usage"]; present(u) {
				a.usage = append(a.usage, string(u))
			}
		}
	}
	return a
}

// seamless checks that the client got one complete answer: text, one id
// (the original's), one model and created, one role chunk, one
// finish_reason, one [DONE] at the end, no error event.
func (a answer) seamless(t *testing.T, text, model string) {
	t.Helper()
	if a.text != text || a.roles != 1 || a.finishes != 1 || a.dones != 1 || len(a.errors) != 0 || a.afterEnd {
		t.Fatalf("answer: text %q (want %q), %d role chunks, %d finish_reasons, %d [DONE], errors %v, events after the end %v",
			a.text, text, a.roles, a.finishes, a.dones, a.errors, a.afterEnd)
	}
	for i, c := range a.chunks {
		if string(c["id"]) != origID || string(c["model"]) != `"`+model+`"` || string(c["created"]) != origCreated {
			t.Fatalf("chunk %d: id %s, model %s, created %s; want the original's %s, %q, %s", i, c["id"], c["model"], c["created"], origID, model, origCreated)
		}
	}
}

func (a answer) continuedBy(t *testing.T, comments ...string) {
	t.Helper()
	if strings.Join(a.comments, "|") != strings.Join(comments, "|") {
		t.Fatalf("comments %q, want %q", a.comments, comments)
	}
}

const contBody = `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Say hello"}]}`

// contConfig is a primary that can continue (prefill), a fallback that
// cannot, and two that can.
func contConfig(primary policy.Continuation, extra string) string {
	return `
model_providers:
  - model: openai/gpt-4o
    continuation: ` + string(primary) + `
    timeouts: {idle: 200ms}
    retry_policy:
      fallback_models: [openai/gpt-4o-mini, anthropic/claude-3-5-sonnet, mistral/mistral-large]
      default_strategy: different_provider
      default_max_attempts: 3
      on_timeout: {strategy: different_provider, max_attempts: 3}
` + extra + `
  - model: openai/gpt-4o-mini
  - model: anthropic/claude-3-5-sonnet
    continuation: prefill
  - model: mistral/mistral-large
    continuation: prefix
`
}

// wantBody checks, byte by byte, the continuation request an upstream
// received: the client's body for that target with the text delivered as
// the trailing assistant message, in the target's dialect.
func wantBody(t *testing.T, f *fixture, target string, n int, text string) {
	t.Helper()
	reqs := f.ups[target].requests()
	if len(reqs) <= n {
		t.Fatalf("%s got %d requests, want a continuation as request %d", target, len(reqs), n+1)
	}
	i, _ := f.e.Compiled().Lookup(target)
	orig, ok := ReplaceModel([]byte(contBody), f.h.targets[i].model)
	if !ok {
		t.Fatal("ReplaceModel")
	}
	want, err := continuationBody(orig, f.e.Compiled().Continuation[i], text)
	if err != nil {
		t.Fatal(err)
	}
	if got := reqs[n].body; !bytes.Equal(got, want) {
		t.Fatalf("%s continuation body\n got %s\nwant %s", target, got, want)
	}
	var b struct {
		Messages []struct{ Role, Content string }
	}
	if err := json.Unmarshal(reqs[n].body, &b); err != nil || len(b.Messages) != 2 || b.Messages[1].Role != "assistant" || b.Messages[1].Content != text {
		t.Fatalf("%s continuation body %s: want the user message and the assistant's %q", target, reqs[n].body, text)
	}
}

// A stream cut after commit is continued: by the same target first, or,
// when it cannot continue, by the next fallback that can. The client reads
// one answer.
func TestContinueCutStream(t *testing.T) {
	t.Parallel()
	t.Run("the same target", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, contConfig(policy.ContinuePrefill, ""), map[string][]reply{
			gpt: {cutStream("gpt-4o", "Hel", "lo, "), sse(nil, contStream("gpt-4o", "wor", "ld")...)},
		})
		resp, body := f.call(contBody)
		if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != gpt || resp.Header.Get("X-Reroute-Attempts") != "1" {
			t.Fatalf("status %d, target %s, attempts %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), resp.Header.Get("X-Reroute-Attempts"))
		}
		a := readStream(t, body)
		a.seamless(t, "Hello, world", "gpt-4o")
		a.continuedBy(t, ": reroute continued target=openai/gpt-4o attempt=2")
		if len(a.usage) != 1 || !strings.Contains(a.usage[0], `"completion_tokens":3`) {
			t.Fatalf("usage %q: want the continuation's", a.usage)
		}
		f.wantCalls(map[string]int{gpt: 2, mini: 0, claude: 0, mist: 0})
		wantBody(t, f, gpt, 1, "Hello, ")
		if n := f.failures(gpt); n != 1 {
			t.Fatalf("%s failures %d, want 1: the cut answer", gpt, n)
		}
	})
	t.Run("a fallback", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, contConfig(policy.ContinueNone, ""), map[string][]reply{
			gpt:    {cutStream("gpt-4o", "Hel", "lo, ")},
			claude: {sse(nil, contStream("claude-3-5-sonnet", "wor", "ld")...)},
		})
		_, body := f.call(contBody)
		a := readStream(t, body)
		a.seamless(t, "Hello, world", "gpt-4o")
		a.continuedBy(t, ": reroute continued target=anthropic/claude-3-5-sonnet attempt=2")
		f.wantCalls(map[string]int{gpt: 1, mini: 0, claude: 1, mist: 0})
		wantBody(t, f, claude, 0, "Hello, ")
	})
	t.Run("nothing delivered yet but the role", func(t *testing.T) {
		t.Parallel()
		// Nothing to continue: the continuation request is the client's.
		f := newFixture(t, contConfig(policy.ContinuePrefill, ""), map[string][]reply{
			gpt: {cutStream("gpt-4o"), sse(nil, contStream("gpt-4o", "Hello")...)},
		})
		_, body := f.call(contBody)
		a := readStream(t, body)
		a.seamless(t, "Hello", "gpt-4o")
		a.continuedBy(t, ": reroute continued target=openai/gpt-4o attempt=2")
		if reqs := f.ups[gpt].requests(); len(reqs) != 2 || string(reqs[1].body) != contBody {
			t.Fatalf("continuation request %q, want the client's body", reqs[len(reqs)-1].body)
		}
	})
	t.Run("escaped text, and a role chunk with content", func(t *testing.T) {
		t.Parallel()
		// The text crosses the cut exactly: JSON escapes decoded into the
		// continuation body, HTML characters and non-ASCII kept; a
		// continuation whose first chunk carries its role and text keeps
		// the text.
		head := `data: {"id":"chatcmpl-CONT7","object":"chat.completion.chunk","created":1767229999,"model":"gpt-4o",`
		f := newFixture(t, contConfig(policy.ContinuePrefill, ""), map[string][]reply{
			gpt: {cutStream("gpt-4o", `Say \"<b>h\u00e9\"`, `\n\ud83d\ude00 `), sse(nil,
				head+`"choices":[{"index":0,"delta":{"role":"assistant","content":"&amp; <i>more</i>"},"finish_reason":null}]}`+"\n\n",
				head+`"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n",
				done)},
		})
		_, body := f.call(contBody)
		a := readStream(t, body)
		a.seamless(t, "Say \"<b>h\u00e9\"\n\U0001F600 &amp; <i>more</i>", "gpt-4o")
		wantBody(t, f, gpt, 1, "Say \"<b>h\u00e9\"\n\U0001F600 ")
		if !strings.Contains(body, `"content":"&amp; <i>more</i>"`) {
			t.Fatalf("continued chunk re-escaped: %s", body)
		}
	})
	t.Run("a continuation cut in turn", func(t *testing.T) {
		t.Parallel()
		// gpt's continuation is cut too; gpt, asked again first, answers
		// 503, so does claude, and mistral continues what both
		// deliveries gave.
		second := contStream("gpt-4o", "wor")[:2]
		overloaded := respond(503, `{"error":{"message":"overloaded","type":"server_error"}}`)
		f := newFixture(t, contConfig(policy.ContinuePrefill, ""), map[string][]reply{
			gpt:    {cutStream("gpt-4o", "Hel", "lo, "), cut(sse(nil, second...)), overloaded},
			claude: {overloaded},
			mist:   {sse(nil, contStream("mistral-large", "ld", "!")...)},
		})
		_, body := f.call(contBody)
		a := readStream(t, body)
		a.seamless(t, "Hello, world!", "gpt-4o")
		a.continuedBy(t, ": reroute continued target=openai/gpt-4o attempt=2", ": reroute continued target=mistral/mistral-large attempt=5")
		f.wantCalls(map[string]int{gpt: 3, mini: 0, claude: 1, mist: 1})
		wantBody(t, f, mist, 0, "Hello, wor")
		wantBody(t, f, gpt, 2, "Hello, wor")
	})
}

// A stall past the idle timeout, the socket still open, is continued.
func TestContinueStall(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	f := newFixture(t, contConfig(policy.ContinuePrefill, ""), map[string][]reply{
		gpt: {sse(gate, roleChunk("chatcmpl-9zX1", "gpt-4o"), chunk("gpt-4o", "Hel"), "", done), sse(nil, contStream("gpt-4o", "lo")...)},
	})
	_, body := f.call(contBody)
	a := readStream(t, body)
	a.seamless(t, "Hello", "gpt-4o")
	a.continuedBy(t, ": reroute continued target=openai/gpt-4o attempt=2")
	wantBody(t, f, gpt, 1, "Hel")
}

// A target that rejects a continuation is not asked again in the request,
// nor by the next request for the rejection TTL; the next that can
// continues. With none left the client gets the error event.
func TestContinueRejected(t *testing.T) {
	t.Parallel()
	reject := respond(400, `{"error":{"message":"This model does not support assistant message prefill. The conversation must end with a user message.","type":"invalid_request_error","param":"messages","code":null}}`)
	t.Run("remembered", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, contConfig(policy.ContinueNone, ""), map[string][]reply{
			gpt:    {cutStream("gpt-4o", "Hel", "lo,")},
			claude: {reject},
			mist:   {sse(nil, contStream("mistral-large", " wor", "ld")...)},
		})
		_, body := f.call(contBody)
		a := readStream(t, body)
		a.seamless(t, "Hello, world", "gpt-4o")
		a.continuedBy(t, ": reroute continued target=mistral/mistral-large attempt=3")
		f.wantCalls(map[string]int{gpt: 1, claude: 1, mist: 1})
		wantBody(t, f, mist, 0, "Hello,")
		rej := f.h.ContinuationRejections()
		if len(rej) != 1 || rej[0].Target != claude {
			t.Fatalf("rejections %+v, want %s", rej, claude)
		}
		if f.failures(claude) != 1 {
			t.Fatalf("claude failures %d", f.failures(claude))
		}
		// The next request's continuation skips claude.
		_, body = f.call(contBody)
		readStream(t, body).seamless(t, "Hello, world", "gpt-4o")
		f.wantCalls(map[string]int{gpt: 2, claude: 1, mist: 2})
	})
	t.Run("text that ends with white space: this request only", func(t *testing.T) {
		t.Parallel()
		// A refusal of a prefill that ends with a space may be about the
		// text: claude is skipped in this request, asked in the next.
		f := newFixture(t, contConfig(policy.ContinueNone, ""), map[string][]reply{
			gpt:    {cutStream("gpt-4o", "Hel", "lo, ")},
			claude: {reject},
			mist:   {sse(nil, contStream("mistral-large", "wor", "ld")...)},
		})
		_, body := f.call(contBody)
		readStream(t, body).seamless(t, "Hello, world", "gpt-4o")
		f.wantCalls(map[string]int{gpt: 1, claude: 1, mist: 1})
		if rej := f.h.ContinuationRejections(); len(rej) != 0 {
			t.Fatalf("rejections %+v, want none remembered", rej)
		}
		_, body = f.call(contBody)
		readStream(t, body).seamless(t, "Hello, world", "gpt-4o")
		f.wantCalls(map[string]int{gpt: 2, claude: 2, mist: 2})
	})
}

// When nothing can continue, the stream ends as it always did: the error
// event, no [DONE], never a truncated success.
func TestContinueNothingCan(t *testing.T) {
	t.Parallel()
	toolCall := `data: {"id":"chatcmpl-9zX1","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"ci"}}]},"finish_reason":null}],"usage":null}` + "\n\n"
	reject := respond(400, `{"error":{"message":"This model does not support assistant message prefill.","type":"invalid_request_error"}}`)
	tests := []struct {
		name  string
		extra string
		body  string
		gpt   reply
		other map[string][]reply
		calls map[string]int
	}{
		{name: "every candidate rejects", body: contBody, gpt: cutStream("gpt-4o", "Hel"),
			other: map[string][]reply{claude: {reject}, mist: {reject}},
			calls: map[string]int{gpt: 1, claude: 1, mist: 1}},
		{name: "the continuation is cut too, until max_attempts", body: contBody, gpt: cutStream("gpt-4o", "Hel"),
			other: map[string][]reply{claude: {cut(sse(nil, contStream("claude-3-5-sonnet", "lo")[:2]...))}, mist: {reject}},
			calls: map[string]int{gpt: 1, claude: 2, mist: 0}},
		{name: "a tool call in flight", body: contBody, gpt: cut(sse(nil, roleChunk("chatcmpl-9zX1", "gpt-4o"), toolCall)),
			calls: map[string]int{gpt: 1, claude: 0, mist: 0}},
		{name: "an answer too long to keep", body: contBody, gpt: cutStream("gpt-4o", strings.Repeat("a", MaxContinuationText/2), strings.Repeat("b", MaxContinuationText/2+1)),
			calls: map[string]int{gpt: 1, claude: 0, mist: 0}},
		{name: "n > 1", body: `{"model":"gpt-4o","stream":true,"n":2,"messages":[{"role":"user","content":"Hi"}]}`, gpt: cutStream("gpt-4o", "Hel"),
			calls: map[string]int{gpt: 1, claude: 0, mist: 0}},
		{name: "logprobs", body: `{"model":"gpt-4o","stream":true,"logprobs":true,"messages":[{"role":"user","content":"Hi"}]}`, gpt: cutStream("gpt-4o", "Hel"),
			calls: map[string]int{gpt: 1, claude: 0, mist: 0}},
		{name: "a JSON response_format", body: `{"model":"gpt-4o","stream":true,"response_format":{"type":"json_object"},"messages":[{"role":"user","content":"Hi"}]}`, gpt: cutStream("gpt-4o", "Hel"),
			calls: map[string]int{gpt: 1, claude: 0, mist: 0}},
		{name: "continue_streams false", extra: "      continue_streams: false", body: contBody, gpt: cutStream("gpt-4o", "Hel"),
			calls: map[string]int{gpt: 1, claude: 0, mist: 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			script := map[string][]reply{gpt: {tt.gpt}}
			for k, v := range tt.other {
				script[k] = v
			}
			f := newFixture(t, contConfig(policy.ContinueNone, tt.extra), script)
			_, body := f.call(tt.body)
			a := readStream(t, body)
			if a.dones != 0 || len(a.errors) != 1 || a.errors[0] != "upstream_stream_cut" || a.afterEnd || a.finishes != 0 {
				t.Fatalf("answer %q: want the events, then one upstream_stream_cut error event and no [DONE]", body)
			}
			if len(a.comments) != 0 && !strings.HasPrefix(tt.name, "the continuation is cut too") {
				t.Fatalf("comments %q: nothing was continued", a.comments)
			}
			f.wantCalls(tt.calls)
		})
	}
}

// A configuration without any continuation dialect makes no request
// continuable: the relay keeps nothing.
func TestContinuableNeedsADialect(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want []bool
	}{
		{"model_providers:\n  - model: a/m\n    retry_policy: {fallback_models: [b/m]}\n  - model: b/m\n", []bool{false, false}},
		{"model_providers:\n  - model: a/m\n    retry_policy: {fallback_models: [b/m]}\n  - model: b/m\n    continuation: prefix\n", []bool{true, false}},
		{"model_providers:\n  - model: a/m\n    retry_policy: {fallback_models: [b/m], continue_streams: false}\n  - model: b/m\n    continuation: prefix\n", []bool{false, false}},
	} {
		cfg, _, err := policy.Parse([]byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		if _, primary, _ := continuable(cfg.Compiled()); !slices.Equal(primary, tc.want) {
			t.Errorf("%s: continuable primaries %v, want %v", tc.yaml, primary, tc.want)
		}
	}
}
