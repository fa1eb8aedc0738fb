package redishealth

import (
	"strings"
	"testing"
	"time"

	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/redishealth/redistest"
)

const sec = int64(time.Second)

// near reports whether got is within a second of want.
func near(got, want int64) bool { return got > want-sec && got < want+sec }

// A Retry-After block and an ejection reported to one replica's actor
// reach the other's, with the time left preserved.
func TestFactsPropagate(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv, baseConfig), newReplica(t, srv, baseConfig)
	a.waitConnected(t)
	b.waitConnected(t)

	now := nowNs()
	a.a.ReportRetryAfter(tGPT4o, now+30*sec)
	f := b.next(t)
	if f.Name != "openai/gpt-4o" || f.Kind != health.RetryAfter || !near(f.Until, now+30*sec) {
		t.Fatalf("imported %+v, want gpt-4o blocked for 30 s", f)
	}
	if st := b.a.Snapshot().Lookup(tGPT4o, nowNs()); !st.Blocked(nowNs()) || !near(st.Until, now+30*sec) {
		t.Fatalf("B's snapshot: %+v", st)
	}

	// The first failure is a strike toward the fleet's streak, the
	// second (consecutive_failures: 2) ejects.
	for range 2 {
		a.a.ReportFailure(tClaude, nowNs())
	}
	f = b.next(t)
	if f.Name != "anthropic/claude-3-5-sonnet" || f.Kind != health.Ejected || !f.Strike || !near(f.Until, nowNs()) {
		t.Fatalf("imported %+v, want claude's strike", f)
	}
	f = b.next(t)
	if f.Name != "anthropic/claude-3-5-sonnet" || f.Kind != health.Ejected || f.Ejections != 1 || f.Strike {
		t.Fatalf("imported %+v, want claude's ejection", f)
	}
	if st := b.a.Snapshot().Lookup(tClaude, nowNs()); !st.Ejected {
		t.Fatalf("B's snapshot of claude: %+v", st)
	}
	waitFor(t, "A to count its facts sent", func() bool { return a.s.Stats().FactsSent == 3 })
	sa, sb := a.s.Stats(), b.s.Stats()
	if sa.FactsSent != 3 || sb.FactsReceived != 3 || sa.FactsReceived != 0 {
		t.Errorf("A sent %d received %d, B received %d; want 3, 0, 3", sa.FactsSent, sa.FactsReceived, sb.FactsReceived)
	}
	if sb.DelaySamples < 2 || sb.DelayP99 <= 0 {
		t.Errorf("B's delay: %d samples, p99 %v", sb.DelaySamples, sb.DelayP99)
	}
}

// A replica that starts after the facts were made loads the live ones from
// Redis, whose keys last as long as the facts.
func TestLateReplicaLoadsLiveFacts(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv, baseConfig)
	a.waitConnected(t)
	now := nowNs()
	a.a.ReportRetryAfter(tClaude, now+40*sec)
	a.a.ReportLatency(tGPT4o, now, 1, time.Minute, 20*time.Second)
	waitFor(t, "A to send its facts", func() bool { return a.s.Stats().FactsSent == 2 })

	raw := rawClient(t, srv)
	left, err := raw.PTTL(testCtx(t), "reroute:fact:retry_after:t:anthropic/claude-3-5-sonnet").Result()
	if err != nil || left < 38*time.Second || left > 40*time.Second {
		t.Fatalf("stored key's TTL %v (%v), want about 40 s", left, err)
	}

	b := newReplica(t, srv, baseConfig)
	b.waitConnected(t)
	if st := b.s.Stats(); st.FactsLoaded != 2 {
		t.Fatalf("B loaded %d facts, want 2", st.FactsLoaded)
	}
	snap := b.a.Snapshot()
	if st := snap.Lookup(tClaude, nowNs()); st.Kind != health.RetryAfter || !near(st.Until, now+40*sec) {
		t.Errorf("claude on B: %+v", st)
	}
	if st := snap.Lookup(tGPT4o, nowNs()); !st.Latency || !near(st.Until, now+20*sec) {
		t.Errorf("gpt-4o on B: %+v", st)
	}
}

// A replica ignores its own messages.
func TestEchoesIgnored(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv, baseConfig)
	a.waitConnected(t)
	a.a.ReportRetryAfter(tMini, nowNs()+30*sec)
	waitFor(t, "A's echo", func() bool { return a.s.Stats().Echoes == 1 })
	if st := a.s.Stats(); st.FactsReceived != 0 || st.DelaySamples != 0 {
		t.Fatalf("A applied its own fact: %+v", st)
	}
}

// Replicas with different configurations: a fact is applied by name (the
// indices differ), a name the receiver does not have is ignored and
// counted, and a fact of a kind the receiver has no rule for is ignored.
func TestUnknownIdentifiersIgnored(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv, baseConfig)
	other := `
model_providers:
  - model: mistral/mistral-large
  - model: openai/gpt-4o
engine:
  passive_health: {enabled: false}
  shared_health: {address: "ADDR", max_backoff: 100ms}
`
	b := newReplica(t, srv, other)
	a.waitConnected(t)
	b.waitConnected(t)
	now := nowNs()
	a.a.ReportRetryAfter(tClaude, now+30*sec) // B has no claude
	for range 2 {
		a.a.ReportFailure(tMini, now) // B has no gpt-4o-mini
	}
	a.a.ReportLatency(tGPT4o, now, 1, time.Minute, 20*time.Second) // B has no on_high_latency
	a.a.ReportRetryAfter(tGPT4o, now+30*sec)                       // B has gpt-4o, as its target 1
	// The facts may come in any order (the actor applies reports per
	// core): wait for all four to be handled.
	// gpt-4o-mini's two failures are a strike and an ejection.
	waitFor(t, "B to handle five facts", func() bool {
		st := b.s.Stats()
		return st.Unknown+st.FactsReceived == 5
	})
	f := b.next(t)
	if f.Name != "openai/gpt-4o" || f.Kind != health.RetryAfter {
		t.Fatalf("imported %+v", f)
	}
	if st := b.a.Snapshot().Lookup(1, nowNs()); !st.Blocked(nowNs()) || st.Latency {
		t.Fatalf("B's gpt-4o (its target 1): %+v", st)
	}
	if st := b.a.Snapshot().Lookup(0, nowNs()); st.Blocked(nowNs()) {
		t.Fatalf("B's target 0 (mistral) was blocked: %+v", st)
	}
	if st := b.s.Stats(); st.Unknown != 4 || st.FactsReceived != 1 {
		t.Fatalf("B: %d unknown, %d received; want 4 and 1", st.Unknown, st.FactsReceived)
	}
}

// Every remote duration is cut to the receiver's own maximum.
func TestRemoteDurationsCapped(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv, baseConfig)
	short := strings.Replace(baseConfig, "default_max_attempts: 2\n", "default_max_attempts: 2\n      retry_after_handling: {max_retry_after_seconds: 10}\n", 1)
	short = strings.Replace(short, "block_duration_seconds: 60", "block_duration_seconds: 5", 1)
	b := newReplica(t, srv, short)
	a.waitConnected(t)
	b.waitConnected(t)
	now := nowNs()
	a.a.ReportRetryAfter(tGPT4o, now+200*sec)
	a.a.ReportLatency(tGPT4o, now, 1, time.Minute, time.Minute)
	// In either order: the actor applies reports per core.
	kinds := map[health.Kind]bool{}
	for range 2 {
		kinds[b.next(t).Kind] = true
	}
	if !kinds[health.RetryAfter] || !kinds[health.Latency] {
		t.Fatalf("imported kinds %v, want a retry-after and a latency block", kinds)
	}
	snap := b.a.Snapshot()
	st := snap.Lookup(tGPT4o, nowNs())
	if st.Until > nowNs()+10*sec {
		t.Fatalf("B's block ends %v from now, beyond its max_retry_after_seconds of 10", time.Duration(st.Until-nowNs()))
	}
	if bs, err := b.a.Blocks(testCtx(t)); err != nil || len(bs) != 2 {
		t.Fatalf("B's blocks %+v, %v", bs, err)
	} else {
		for _, bl := range bs {
			limit := map[health.Kind]int64{health.RetryAfter: 10 * sec, health.Latency: 5 * sec}[bl.Kind]
			if bl.Until > nowNs()+limit {
				t.Errorf("%v block of %v from now, over the cap %v", bl.Kind, time.Duration(bl.Until-nowNs()), time.Duration(limit))
			}
		}
	}
	if c := b.s.Stats().FactsCapped; c != 2 {
		t.Errorf("capped %d, want 2", c)
	}
}
