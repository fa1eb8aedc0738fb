package httpproxy

import (
	"strings"
	"testing"

	"github.com/reroute-go/reroute/policy"
)

// manyContinuable is a primary whose continuation may go to any of n
// other targets that can continue, by the random pick.
func manyContinuable(n int) string {
	y := `
model_providers:
  - model: openai/gpt-4o
    continuation: prefill
    retry_policy:
      default_strategy: different_provider
      on_timeout: {strategy: different_provider, max_attempts: 3}
`
	for i := range n {
		y += "  - model: p" + itoa(i) + "/m" + itoa(i) + "\n    continuation: prefill\n"
	}
	return y
}

// heldBytes is what a request holds of bodies made for other targets:
// its rewritten bodies and its continuation bodies.
func (rq *request) heldBytes() int {
	n := 0
	for _, a := range rq.alt {
		n += len(a.body)
	}
	if rq.cont != nil {
		for _, b := range rq.cont.bodies {
			n += len(b)
		}
	}
	return n
}

// TestCanContinueHoldsNoBodies: deciding which targets can continue an
// answer (the engine asks about every candidate of a random pick, here
// 40) builds no body for any of them: a continuation's memory is bounded
// by the attempts it makes, not by the size of the configuration. Before,
// each candidate asked kept its own copy of the client's body and of the
// text delivered, 40 copies of 64 KiB here.
func TestCanContinueHoldsNoBodies(t *testing.T) {
	const n = 40
	f := newFixture(t, manyContinuable(n), nil)
	text := strings.Repeat("a", 64<<10)
	rq := &request{h: f.h, body: []byte(contBody), sent: "gpt-4o",
		cont: &continuation{text: []byte(text), bodies: map[int][]byte{}}}
	for t2 := range n + 1 {
		if !rq.canContinue(t2) {
			t.Fatalf("target %d cannot continue", t2)
		}
	}
	if held := rq.heldBytes(); held > 0 {
		t.Fatalf("asking %d candidates held %d bytes of bodies; want none until an attempt is made", n+1, held)
	}
	// The body of the one attempted is built, and is the continuation body.
	b, err := rq.contBody(3)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := ReplaceModel([]byte(contBody), f.h.targets[3].model)
	want, err := continuationBody(orig, policy.ContinuePrefill, text)
	if err != nil || string(b) != string(want) {
		t.Fatalf("continuation body of target 3: %.80s…, %v", b, err)
	}
	// A body the dialect cannot continue (a trailing assistant message
	// that is not text) is refused for every target alike.
	rq = &request{h: f.h, body: []byte(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null}]}`), sent: "gpt-4o",
		cont: &continuation{text: []byte("x"), bodies: map[int][]byte{}}}
	for t2 := range n + 1 {
		if rq.canContinue(t2) {
			t.Fatalf("target %d can continue a body whose prefill is not text", t2)
		}
	}
}
