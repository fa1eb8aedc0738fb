package redishealth

import (
	"strings"
	"testing"
	"time"

	"github.com/reroute-go/reroute/redishealth/redistest"
)

// Messages published and values stored with a raw client, as a broken or
// hostile writer would: each is dropped and counted under its reason,
// none is applied, none panics.
func TestHostileMessagesDroppedAndCounted(t *testing.T) {
	srv := redistest.Start(t)
	raw := rawClient(t, srv)
	ctx := testCtx(t)
	// Stored values are checked like messages when a replica loads them.
	for k, v := range map[string]string{
		"reroute:fact:retry_after:t:openai/gpt-4o":      "not json",
		"reroute:fact:latency:t:openai/gpt-4o":          `{"n":"openai/gpt-4o","k":"latency","x":1}`,
		"reroute:fact:ejected:t:openai/gpt-4o":          `{"n":"openai/gpt-4o","k":"recovered"}`,
		"reroute:fact:retry_after:t:openai/gpt-4o-mini": strings.Repeat("x", maxMessage+1),
	} {
		if err := raw.Set(ctx, k, v, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// A valid value that never expires is a fact that never ends.
	if err := raw.Set(ctx, "reroute:fact:retry_after:t:anthropic/claude-3-5-sonnet", `{"n":"anthropic/claude-3-5-sonnet","k":"retry_after"}`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	// A key of another type under the prefix.
	if err := raw.HSet(ctx, "reroute:fact:latency:t:anthropic/claude-3-5-sonnet", "n", "x").Err(); err != nil {
		t.Fatal(err)
	}
	b := newReplica(t, srv, baseConfig)
	b.waitConnected(t)
	if st := b.s.Stats(); st.Malformed != 4 || st.Oversized != 1 || st.Absurd != 1 || st.FactsLoaded != 0 {
		t.Fatalf("after loading hostile values: %+v", st)
	}

	const ch = "reroute:health"
	const ok = `{"v":1,"r":"x","t":1,"f":[{"n":"openai/gpt-4o","k":"retry_after","d":1000000000}]}`
	for _, m := range []string{
		"",
		"{",
		"[1,2]",
		strings.Repeat(" ", maxMessage+1) + ok, // oversized
		`{"v":2,"r":"x","t":1,"f":[{"n":"openai/gpt-4o","k":"retry_after","d":1000000000}]}`,
		`{"v":1,"t":1,"f":[{"n":"openai/gpt-4o","k":"retry_after","d":1000000000}]}`,
		`{"v":1,"r":"x","t":0,"f":[{"n":"openai/gpt-4o","k":"retry_after","d":1000000000}]}`,
		`{"v":1,"r":"x","t":1,"f":[]}`,
		`{"v":1,"r":"x","t":1,"f":[{"n":"openai/gpt-4o","k":"retry_after","d":1000000000}],"extra":1}`,
		ok + ok, // trailing data
		`{"v":1,"r":"x","t":1,"f":[{"n":"openai/gpt-4o","k":"block","d":1000000000}]}`,
		`{"v":1,"r":"x","t":1,"f":[{"n":"","k":"retry_after","d":1000000000}]}`,
		`{"v":1,"r":"x","t":1,"f":[{"n":"openai/gpt-4o","k":"recovered","d":5}]}`,
		`{"v":1,"r":"x","t":1,"f":[{"n":"openai/gpt-4o","k":"retry_after","d":"1s"}]}`,
		`{"v":1,"r":"x","t":1,"f":[{"n":"openai/gpt-4o","k":"ejected","d":1000000000,"e":-1}]}`,
		`{"v":1,"r":"x","t":1,"f":[{"n":"` + strings.Repeat("a", maxName+1) + `","k":"retry_after","d":1000000000}]}`,
	} {
		if err := raw.Publish(ctx, ch, m).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Well-formed messages whose facts are not applicable: durations out of
	// range (counted per fact), names this configuration lacks.
	for _, m := range []string{
		`{"v":1,"r":"x","t":1,"f":[{"n":"openai/gpt-4o","k":"retry_after","d":-1},{"n":"openai/gpt-4o","k":"latency","d":864000000000000}]}`,
		`{"v":1,"r":"x","t":1,"f":[{"n":"openai/gpt-5","k":"retry_after","d":1000000000},{"n":"openai/gpt-4o","p":true,"k":"retry_after","d":1000000000}]}`,
		// The last one is valid: when it is applied, every message before
		// it has been handled (one publisher, one subscription: in order).
		`{"v":1,"r":"x","t":1,"f":[{"n":"openai/gpt-4o-mini","k":"retry_after","d":30000000000}]}`,
	} {
		if err := raw.Publish(ctx, ch, m).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if f := b.next(t); f.Name != "openai/gpt-4o-mini" {
		t.Fatalf("applied %+v", f)
	}
	st := b.s.Stats()
	if st.Oversized != 1+1 || st.Malformed != 4+15 || st.Absurd != 1+2 || st.Unknown != 2 || st.FactsReceived != 1 {
		t.Fatalf("oversized %d (want 2), malformed %d (want 19), absurd %d (want 3), unknown %d (want 2), received %d (want 1)",
			st.Oversized, st.Malformed, st.Absurd, st.Unknown, st.FactsReceived)
	}
	if st := b.a.Snapshot().Lookup(tGPT4o, nowNs()); st.Blocked(nowNs()) {
		t.Fatalf("a refused fact was applied: %+v", st)
	}
}
