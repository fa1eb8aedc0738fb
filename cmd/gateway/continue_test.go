package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Through the real gateway: a stream cut after commit is continued by the
// fallback that can, after one that rejects the continuation; the client
// reads one answer; the rejection is listed on /debug/reroute/blocks and
// the continuation counted on /metrics.
func TestGatewayContinuesCutStream(t *testing.T) {
	chunk := func(id, content string) string {
		return `data: {"id":"` + id + `","object":"chat.completion.chunk","created":1767225600,"model":"m","choices":[{"index":0,"delta":{"content":"` + content + `"},"finish_reason":null}]}` + "\n\n"
	}
	stream := func(events ...string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			for _, ev := range events {
				io.WriteString(w, ev)
				w.(http.Flusher).Flush()
			}
		}
	}
	primary := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		stream(chunk("chatcmpl-A", "Hel"))(w, r)
		panic(http.ErrAbortHandler) // cut after commit
	})
	rejecting := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		io.WriteString(w, `{"error":{"message":"This model does not support assistant message prefill. The conversation must end with a user message.","type":"invalid_request_error","param":"messages","code":null}}`)
	})
	var got []byte
	continuing := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		stream(chunk("chatcmpl-B", "lo"),
			`data: {"id":"chatcmpl-B","object":"chat.completion.chunk","created":1767229999,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n",
			"data: [DONE]\n\n")(w, r)
	})
	url, _, _ := gateway(t, `
model_providers:
  - model: openai/m
    base_url: `+primary.URL+`/v1
    retry_policy:
      fallback_models: [rejecting/m, continuing/m]
      default_strategy: different_provider
      default_max_attempts: 3
      on_timeout: {strategy: different_provider, max_attempts: 3}
  - model: rejecting/m
    base_url: `+rejecting.URL+`/v1
    continuation: prefill
  - model: continuing/m
    base_url: `+continuing.URL+`/v1
    continuation: prefill
`)
	resp, body := post(t, url, `{"model":"openai/m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	want := chunk("chatcmpl-A", "Hel") + ": reroute continued target=continuing/m attempt=3\n\n" +
		`data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}],"created":1767225600,"id":"chatcmpl-A","model":"m","object":"chat.completion.chunk"}` + "\n\n" +
		`data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"created":1767225600,"id":"chatcmpl-A","model":"m","object":"chat.completion.chunk"}` + "\n\n" +
		"data: [DONE]\n\n"
	if resp.StatusCode != 200 || body != want {
		t.Fatalf("status %d, answer\n%s\nwant\n%s", resp.StatusCode, body, want)
	}
	var sent struct {
		Messages []struct{ Role, Content string }
	}
	if err := json.Unmarshal(got, &sent); err != nil || len(sent.Messages) != 2 || sent.Messages[1].Role != "assistant" || sent.Messages[1].Content != "Hel" {
		t.Fatalf("continuation request %s", got)
	}
	_, blocks := get(t, url+pathBlocks)
	var bs []blockJSON
	if err := json.Unmarshal([]byte(blocks), &bs); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, b := range bs {
		found = found || (b.ID == "rejecting/m" && b.Kind == "continuation_rejected" && b.RemainingSeconds > 0)
	}
	if !found {
		t.Fatalf("blocks %s: want rejecting/m continuation_rejected", blocks)
	}
	_, metrics := get(t, url+pathMetrics)
	if !strings.Contains(metrics, `reroute_continuations_total{kind="failover",target="continuing/m"} 1`) {
		t.Fatalf("metrics lack the continuation:\n%s", metrics)
	}
}
