package httpproxy

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// Error bodies as OpenAI, Anthropic, Azure and OpenAI-compatible servers send them.
func TestClassifyBody(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   bodyClass
	}{
		{"openai context length", 400, `{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130912 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`, bodyContextLength},
		{"openai context window, input", 400, `{"error":{"message":"Your input exceeds the context window of this model. Please adjust your input and try again.","type":"invalid_request_error","param":"input","code":"context_length_exceeded"}}`, bodyContextLength},
		{"anthropic prompt too long", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 205351 tokens > 200000 maximum"},"request_id":"req_011CV5J4YZo4J3KLTDZg0000"}`, bodyContextLength},
		{"anthropic context limit", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"input length and ` + "`max_tokens`" + ` exceed context limit: 197000 + 16384 > 200000, decrease input length or ` + "`max_tokens`" + ` and try again"}}`, bodyContextLength},
		{"gemini token count", 400, `{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}`, bodyContextLength},
		{"mistral", 400, `{"object":"error","message":"Prompt contains 40000 tokens and 0 draft tokens, too large for model with 32768 maximum context length","type":"invalid_request_message_error","param":null,"code":null}`, bodyContextLength},
		{"together 403", 403, `{"error":{"message":"Input validation error: ` + "`inputs`" + ` tokens + ` + "`max_new_tokens`" + ` must be <= 8193. Given: 9000 ` + "`inputs`" + ` tokens and 512 ` + "`max_new_tokens`" + `","type":"invalid_request_error"}}`, bodyContextLength},
		{"openrouter metadata", 400, `{"error":{"message":"bad","code":400,"metadata":{"error_type":"context_length_exceeded"}}}`, bodyContextLength},
		{"openai invalid prompt", 400, `{"error":{"message":"Invalid prompt: your prompt was flagged as potentially violating our usage policy.","type":"invalid_request_error","param":null,"code":"invalid_prompt"}}`, bodyContentPolicy},
		{"openai image policy", 400, `{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}`, bodyContentPolicy},
		{"azure content filter", 400, `{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation"}}}`, bodyContentPolicy},
		{"deepseek", 400, `{"error":{"message":"Content Exists Risk","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}`, bodyContentPolicy},
		{"plain 400", 400, `{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}`, bodyOther},
		{"429 TPM too large is not context length", 429, `{"error":{"message":"Request too large for gpt-4o on tokens per min (TPM): Limit 30000, Requested 34307. The input or output tokens must be reduced in order to run successfully.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`, bodyOther},
		{"throttling wording wins", 400, `{"message":"Too many tokens, please wait before trying again. Input is too long."}`, bodyOther},
		{"5xx never refined", 500, `{"error":{"message":"maximum context length","code":"context_length_exceeded"}}`, bodyOther},
		{"html body", 400, `<html><body>Bad Request</body></html>`, bodyOther},
		{"empty", 400, ``, bodyOther},
		{"error as a string", 400, `{"error":"prompt is too long"}`, bodyContextLength},
		{"numeric code", 400, `{"error":{"message":"x","code":400}}`, bodyOther},
	}
	for _, tt := range tests {
		if got := classifyBody(tt.status, []byte(tt.body)); got != tt.want {
			t.Errorf("%s: classifyBody = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestEventStatus(t *testing.T) {
	for data, want := range map[string]int{
		`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`:                                          529,
		`{"error":{"message":"x","type":"server_error","param":null,"code":null}}`:                                             500,
		`{"type":"error","sequence_number":2,"error":{"type":"service_unavailable_error","code":"server_is_overloaded"}}`:      503,
		`{"error":{"message":"Rate limit reached","type":"tokens","code":"rate_limit_exceeded"}}`:                              429,
		`{"error":{"message":"prompt is too long","type":"invalid_request_error"}}`:                                            400,
		`{"error":{"message":"who knows"}}`:                                                                                    502,
		`{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}`:                         429,
		`{"error":{"message":"Internal error encountered.","code":500,"status":"INTERNAL"},"choices":[{"finish_reason":"x"}]}`: 500,
	} {
		p, _ := parseError([]byte(data))
		if got := eventStatus(p); got != want {
			t.Errorf("eventStatus(%s) = %d, want %d", data, got, want)
		}
	}
}

func TestShouldNotRetry(t *testing.T) {
	for v, want := range map[string]bool{"false": true, "FALSE": true, " false ": true, "true": false, "": false, "0": false} {
		h := http.Header{}
		if v != "" {
			h.Set("X-Should-Retry", v)
		}
		if got := shouldNotRetry(h); got != want {
			t.Errorf("x-should-retry %q: %v, want %v", v, got, want)
		}
	}
}

func TestSSEReader(t *testing.T) {
	type ev struct {
		kind eventKind
		raw  string
	}
	tests := []struct {
		name string
		in   string
		want []ev
		end  error // what follows the events
	}{
		{
			name: "chunks and done",
			in:   "data: {\"a\":1}\n\ndata: [DONE]\n\n",
			want: []ev{{evData, "data: {\"a\":1}\n\n"}, {evDone, "data: [DONE]\n\n"}},
			end:  io.EOF,
		},
		{
			name: "CRLF, comments, ping, id and retry",
			in:   ": hi\r\n\r\nevent: ping\r\ndata: {\"type\":\"ping\"}\r\n\r\nid: 7\r\nretry: 10\r\ndata: {\"a\":1}\r\n\r\n",
			want: []ev{{evNoise, ": hi\r\n\r\n"}, {evNoise, "event: ping\r\ndata: {\"type\":\"ping\"}\r\n\r\n"}, {evData, "id: 7\r\nretry: 10\r\ndata: {\"a\":1}\r\n\r\n"}},
			end:  io.EOF,
		},
		{
			name: "multi-line data is one JSON value",
			in:   "data: {\"a\":\ndata: 1}\n\n",
			want: []ev{{evData, "data: {\"a\":\ndata: 1}\n\n"}},
			end:  io.EOF,
		},
		{
			name: "[DONE] without its blank line",
			in:   "data: {\"a\":1}\n\ndata: [DONE]",
			want: []ev{{evData, "data: {\"a\":1}\n\n"}, {evDone, "data: [DONE]\n\n"}},
			end:  io.EOF,
		},
		{
			name: "error events",
			in:   "data: {\"error\":{\"message\":\"x\"}}\n\nevent: error\ndata: {\"type\":\"error\"}\n\ndata: {\"error\":null,\"a\":1}\n\n",
			want: []ev{{evError, "data: {\"error\":{\"message\":\"x\"}}\n\n"}, {evError, "event: error\ndata: {\"type\":\"error\"}\n\n"}, {evData, "data: {\"error\":null,\"a\":1}\n\n"}},
			end:  io.EOF,
		},
		{
			name: "cut inside an event",
			in:   "data: {\"a\":1}\n\ndata: {\"a\"",
			want: []ev{{evData, "data: {\"a\":1}\n\n"}},
			end:  io.ErrUnexpectedEOF,
		},
		{
			name: "a line that is not a field",
			in:   "data: {\"a\":1}\n\n<html>\n\n",
			want: []ev{{evData, "data: {\"a\":1}\n\n"}},
			end:  &malformedError{},
		},
		{
			name: "data that is not JSON",
			in:   "data: hello\n\n",
			end:  &malformedError{},
		},
		{
			name: "a long line",
			in:   "data: {\"a\":\"" + strings.Repeat("x", 20000) + "\"}\n\n",
			want: []ev{{evData, "data: {\"a\":\"" + strings.Repeat("x", 20000) + "\"}\n\n"}},
			end:  io.EOF,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &sseReader{br: bufio.NewReaderSize(strings.NewReader(tt.in), 4096)}
			for i, w := range tt.want {
				kind, raw, _, err := r.next()
				if err != nil || kind != w.kind || string(raw) != w.raw {
					t.Fatalf("event %d = %v %q %v; want %v %q", i, kind, raw, err, w.kind, w.raw)
				}
			}
			_, _, _, err := r.next()
			var m *malformedError
			switch {
			case errors.As(tt.end, &m):
				if !isMalformed(err) {
					t.Errorf("end = %v, want malformed", err)
				}
			case err != tt.end:
				t.Errorf("end = %v, want %v", err, tt.end)
			}
		})
	}
}

// After a malformed event the reader goes on with the next one: a line
// that is not a field takes the rest of its event with it.
func TestSSEReaderResumesAfterMalformed(t *testing.T) {
	in := "data: {\"a\":1}\n\n<html>\n<body>\n\ndata: {\"b\":2}\n\ndata: {\"c\"\n\ndata: {\"d\":4}\nno field\n\ndata: [DONE]\n\n"
	r := &sseReader{br: bufio.NewReaderSize(strings.NewReader(in), 4096)}
	var got []string
	for {
		kind, raw, _, err := r.next()
		if err == io.EOF {
			break
		}
		switch {
		case isMalformed(err):
			got = append(got, "malformed")
		case err != nil:
			t.Fatalf("after %q: %v", got, err)
		case kind == evDone:
			got = append(got, "done")
		default:
			got = append(got, string(raw))
		}
	}
	want := []string{"data: {\"a\":1}\n\n", "malformed", "data: {\"b\":2}\n\n", "malformed", "malformed", "done"}
	if !slices.Equal(got, want) {
		t.Errorf("events %q\nwant %q", got, want)
	}
}
