package httpproxy

import (
	"strings"
	"testing"

	"github.com/reroute-go/reroute/policy"
)

// benchRequest is a typical streamed chat request: a system prompt, a
// user turn, an assistant turn and the user's follow-up.
const benchRequest = `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"temperature":0.7,"max_tokens":1024,` +
	`"messages":[{"role":"system","content":"You are a helpful assistant. Answer concisely and cite your sources when you use them."},` +
	`{"role":"user","content":"What is the difference between a mutex and a semaphore?"},` +
	`{"role":"assistant","content":"A mutex is owned by the thread that locks it and admits one holder; a semaphore is a counter that admits up to N holders and has no owner."},` +
	`{"role":"user","content":"Show me an example in Go of each, and explain when you would pick one over the other."}]}`

// benchDelivered is 2 KB of delivered text, with the newlines and quotes
// a real answer has.
var benchDelivered = strings.Repeat("Here is a \"mutex\" in Go:\n\tvar mu sync.Mutex\n\tmu.Lock()\n", 40)[:2048]

// BenchmarkContinuationBody: building the continuation request of a
// typical 4-message request after 2 KB were delivered, per dialect.
func BenchmarkContinuationBody(b *testing.B) {
	body := []byte(benchRequest)
	for _, d := range []policy.Continuation{policy.ContinuePrefill, policy.ContinuePrefix, policy.ContinueFinalMessage} {
		b.Run(string(d), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body) + len(benchDelivered)))
			for b.Loop() {
				if _, err := continuationBody(body, d, benchDelivered); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNotContinuable: the request-side check, once per request.
func BenchmarkNotContinuable(b *testing.B) {
	body := []byte(benchRequest)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if r := notContinuable(body); r != "" {
			b.Fatal(r)
		}
	}
}

// BenchmarkReplaceModel: the other in-place edit of a request body, on
// the same request, for comparison.
func BenchmarkReplaceModel(b *testing.B) {
	body := []byte(benchRequest)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, ok := ReplaceModel(body, "claude-3-5-sonnet"); !ok {
			b.Fatal("not replaced")
		}
	}
}
