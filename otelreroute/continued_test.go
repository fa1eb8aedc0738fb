package otelreroute_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/reroute-go/reroute/otelreroute"
)

// sse answers a stream of the events; cut, it ends the connection after
// them without [DONE].
func sse(cut bool, events ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for _, ev := range events {
			_, _ = w.Write([]byte(ev))
			w.(http.Flusher).Flush()
		}
		if cut {
			panic(http.ErrAbortHandler)
		}
	}
}

func textChunk(s string) string {
	return `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"` + s + `"},"finish_reason":null}]}` + "\n\n"
}

// A stream cut after commit and continued is one request span whose
// reroute.attempts counts the continuation's attempt too, and whose
// reroute.served_by is the target that finished the answer.
func TestContinuedRequestSpan(t *testing.T) {
	up := newUpstream(t,
		sse(true, textChunk("Hel")),
		sse(false, textChunk("lo"), `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n", "data: [DONE]\n\n"))
	g := newGateway(t, `
model_providers:
  - model: openai/gpt-4o
    base_url: `+up.srv.URL+`/v1
    access_key: sk-test-OPENAI-key-1111
    continuation: prefill
    retry_policy: {default_strategy: same_model, on_timeout: {strategy: same_model, max_attempts: 3}}
`)
	status, body := g.post(`{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"Say hello"}]}`)
	if status != 200 || !strings.Contains(body, ": reroute continued target=openai/gpt-4o attempt=2") {
		t.Fatalf("status %d, body %s; want a continued stream", status, body)
	}
	var req []string
	for _, s := range g.spans.GetSpans() {
		if s.Name == otelreroute.SpanRequest {
			req = attrs(s.Attributes)
		}
	}
	found := 0
	for _, a := range req {
		if a == "reroute.attempts=2" || a == "reroute.served_by=openai/gpt-4o" {
			found++
		}
	}
	if found != 2 {
		t.Fatalf("request span attributes %v; want reroute.attempts=2 and reroute.served_by=openai/gpt-4o", req)
	}
}

// The span of an attempt that continues an answer says the wait the
// engine added before it (none here), not the time since the span of the
// answer it continues, which ended at that answer's commit point and so
// spans the relay of the stream.
func TestContinuationAttemptWait(t *testing.T) {
	up := newUpstream(t,
		sse(true, textChunk("Hel")),
		sse(false, textChunk("lo"), `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n", "data: [DONE]\n\n"))
	g := newGateway(t, `
model_providers:
  - model: openai/gpt-4o
    base_url: `+up.srv.URL+`/v1
    access_key: sk-test-OPENAI-key-1111
    continuation: prefill
    retry_policy: {default_strategy: same_model, on_timeout: {strategy: same_model, max_attempts: 3}}
`)
	if status, body := g.post(`{"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"Say hello"}]}`); status != 200 || !strings.Contains(body, "reroute continued") {
		t.Fatalf("status %d, body %s; want a continued stream", status, body)
	}
	var waits []string
	for _, s := range g.spans.GetSpans() {
		if s.Name != otelreroute.SpanAttempt {
			continue
		}
		for _, a := range attrs(s.Attributes) {
			if strings.HasPrefix(a, "reroute.wait_ms=") {
				waits = append(waits, a)
			}
		}
	}
	if len(waits) != 1 || waits[0] != "reroute.wait_ms=0" {
		t.Fatalf("attempt spans' waits %v; want the continuation's alone, 0", waits)
	}
}
