package health

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const hookConfig = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_high_latency: {threshold_ms: 1000, min_triggers: 5, trigger_window_seconds: 10, strategy: different_provider, max_attempts: 2, block_duration_seconds: 60}
  - model: anthropic/claude-3-5-sonnet
`

func TestOnBlockOncePerCreatedBlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		c := compiled(t, hookConfig)
		var calls []string
		a := New(c, WithOnBlock(func(name string, k Kind, d time.Duration) {
			calls = append(calls, fmt.Sprint(name, " ", k, " ", d))
		}))
		defer a.Stop()
		l := c.Rules[0].Latency
		now := time.Now().UnixNano()
		sync := func() {
			t.Helper()
			if err := a.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}

		for range 3 {
			a.ReportLatency(0, now, l.MinTriggers, l.Window, l.Block)
		}
		sync()
		if len(calls) != 0 {
			t.Fatalf("3 of min_triggers 5 events: calls %q, want none", calls)
		}
		for range 2 {
			a.ReportLatency(0, now, l.MinTriggers, l.Window, l.Block)
		}
		sync()
		if want := "openai/gpt-4o latency 1m0s"; len(calls) != 1 || calls[0] != want {
			t.Fatalf("5 events: calls %q, want [%q]", calls, want)
		}
		// Five more while blocked extend nothing (same instant): no call.
		for range 5 {
			a.ReportLatency(0, now, l.MinTriggers, l.Window, l.Block)
		}
		sync()
		if len(calls) != 1 {
			t.Fatalf("a trigger on a live block must not call: %q", calls)
		}

		// Retry-After on the provider: created once, extended silently.
		p := c.ProviderID(1)
		a.ReportRetryAfter(p, now+int64(2*time.Second))
		sync()
		a.ReportRetryAfter(p, now+int64(4*time.Second))
		sync()
		if want := "anthropic retry_after 2s"; len(calls) != 2 || calls[1] != want {
			t.Fatalf("calls %q, want the latency one and %q", calls, want)
		}

		// Once the block has ended, a new one is a creation again.
		time.Sleep(4 * time.Second)
		a.ReportRetryAfter(p, time.Now().Add(5*time.Second).UnixNano())
		sync()
		if want := "anthropic retry_after 5s"; len(calls) != 3 || calls[2] != want {
			t.Fatalf("calls %q, want a third, %q", calls, want)
		}
	})
}

func TestOnBlockCreatedAndExtendedInOneBatch(t *testing.T) {
	// Without the goroutine the batch is applied by one drain.
	c := compiled(t, hookConfig)
	n := 0
	a := newActor(c, withStripes(1), WithOnBlock(func(string, Kind, time.Duration) { n++ }))
	now := a.clock.Now().UnixNano()
	a.ReportRetryAfter(0, now+int64(time.Minute))
	a.ReportRetryAfter(0, now+int64(2*time.Minute))
	a.ReportRetryAfter(1, now-1) // already over: blocks nothing, announced nowhere
	a.drain(true)
	if n != 1 {
		t.Fatalf("a block created and extended in one batch, and one already over: %d calls, want 1", n)
	}
}

func TestActorLogFields(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		core, logs := observer.New(zapcore.DebugLevel)
		c := testCompiled(t)
		a := New(c, WithLogger(zap.New(core)))
		defer a.Stop()
		start := time.Now()
		a.ReportRetryAfter(tClaude, start.Add(2*time.Second).UnixNano()) // a target
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		a.ReportRetryAfter(pOpenAI, start.Add(30*time.Second).UnixNano()) // a provider
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		a.ReportRetryAfter(tClaude, start.Add(4*time.Second).UnixNano())
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second) // claude expires at start+4s, on a tick
		synctest.Wait()

		type line struct {
			msg, id, scope string
			lvl            zapcore.Level
			d              time.Duration
		}
		var got []line
		for _, e := range logs.All() {
			m := e.ContextMap()
			if m["apply_to"] != "global" || m["kind"] != "retry_after" {
				t.Errorf("%s: fields %v", e.Message, m)
			}
			d, _ := m["duration"].(time.Duration)
			got = append(got, line{e.Message, m["id"].(string), m["scope"].(string), e.Level, d})
		}
		want := []line{
			{"block created", "anthropic/claude-3-5-sonnet", "target", zapcore.InfoLevel, 2 * time.Second},
			{"block created", "openai", "provider", zapcore.InfoLevel, 30 * time.Second},
			{"block extended", "anthropic/claude-3-5-sonnet", "target", zapcore.DebugLevel, 3 * time.Second},
			// Created at start, ended at start+4s: it lasted 4s.
			{"block expired", "anthropic/claude-3-5-sonnet", "target", zapcore.InfoLevel, 4 * time.Second},
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("logged\n%v\nwant\n%v", got, want)
		}
	})
}

func TestActorExpiredWithoutStartLogsDeadline(t *testing.T) {
	// Created while nothing tracked changes (no hook, logger off), expired
	// with the logger on: only the deadline is known.
	core, logs := observer.New(zapcore.InfoLevel)
	a := newActor(testCompiled(t), withStripes(1))
	now := a.clock.Now().UnixNano()
	a.ReportRetryAfter(tMini, now+1)
	a.drain(false)
	a.log = zap.New(core)
	a.expire()
	e := logs.All()
	if len(e) != 1 || e[0].Message != "block expired" {
		t.Fatalf("logged %v", e)
	}
	m := e[0].ContextMap()
	if _, ok := m["duration"]; ok || m["until"] == nil || m["scope"] != "target" {
		t.Fatalf("fields %v: want until and no duration", m)
	}
}

func TestActorWarnsDroppedRateLimited(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	a := newActor(testCompiled(t), withStripes(1), WithLogger(zap.New(core)))
	a.drain(true) // closed: every report from now on is refused
	sec := int64(time.Second)
	drop := func(n int) {
		for range n {
			a.ReportRetryAfter(tGPT4o, 1)
		}
	}
	a.warnDropped(1 * sec)
	if logs.Len() != 0 {
		t.Fatal("nothing dropped: no warning")
	}
	drop(3)
	a.warnDropped(2 * sec)
	drop(2)
	a.warnDropped(3 * sec)                        // within DropLogInterval: silent
	a.warnDropped(2*sec + int64(DropLogInterval)) // due: the 2 since
	a.warnDropped(3*sec + int64(DropLogInterval)) // nothing new: silent
	var got []string
	for _, e := range logs.All() {
		m := e.ContextMap()
		got = append(got, fmt.Sprint(e.Level, " ", e.Message, " ", m["dropped"], " ", m["total"]))
	}
	want := []string{"warn health reports dropped 3 3", "warn health reports dropped 2 5"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("logged %q, want %q", got, want)
	}
}
