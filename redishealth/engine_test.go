package redishealth

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
	"github.com/reroute-go/reroute/redishealth/redistest"
)

// gateway is one engine with its Sharer.
type gateway struct {
	e      *engine.Engine
	s      *Sharer
	probes atomic.Int32
}

func newGateway(t testing.TB, srv *redistest.Server, doc string) *gateway {
	t.Helper()
	cfg := mustConfig(t, doc, srv.Addr)
	g := &gateway{}
	s, err := New(cfg.Engine.SharedHealth, cfg.Compiled())
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(cfg, s.EngineOption(), engine.WithHooks(engine.Hooks{Probe: func(string) { g.probes.Add(1) }}))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(e.Actor()); err != nil {
		t.Fatal(err)
	}
	g.e, g.s = e, s
	t.Cleanup(func() {
		_ = s.Close()
		_ = e.Close()
	})
	return g
}

func (g *gateway) connected() bool { return g.s.Stats().Connected }

func ok200(context.Context, engine.Attempt) policy.Outcome { return policy.Outcome{Status: 200} }

// Redis killed while requests flow: every request is still answered (from
// local state), facts made meanwhile stay local; Redis restarted on the
// same port: both replicas reconnect, write their live facts back, facts
// flow again, and a replica started afterwards loads the live ones,
// including the one made during the outage.
func TestRedisKilledAndRestarted(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newGateway(t, srv, baseConfig), newGateway(t, srv, baseConfig)
	waitFor(t, "both to connect", func() bool { return a.connected() && b.connected() })

	ctx := testCtx(t)
	stop := make(chan struct{})
	var answered, failed atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := a.e.Do(ctx, "openai/gpt-4o-mini", ok200); err != nil {
				failed.Add(1)
			} else {
				answered.Add(1)
			}
		}
	})
	defer func() { close(stop); wg.Wait() }()

	srv.Stop()
	waitFor(t, "both to notice", func() bool { return !a.connected() && !b.connected() })
	before := answered.Load()
	waitFor(t, "requests answered while Redis is down", func() bool { return answered.Load() > before+100 })

	// A fact made during the outage is applied locally at once.
	now := nowNs()
	a.e.Actor().ReportRetryAfter(tGPT4o, now+60*sec)
	if err := a.e.Actor().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.e.Actor().Snapshot().Lookup(tGPT4o, nowNs()); !st.Blocked(nowNs()) {
		t.Fatal("a local fact waited for Redis")
	}
	waitFor(t, "the fact to be counted unsent", func() bool { return a.s.Stats().Unsent == 1 })

	srv.Restart()
	waitFor(t, "both to reconnect", func() bool { return a.connected() && b.connected() })
	// The reconnection wrote A's live fact back, and B loaded it.
	waitFor(t, "B to load A's fact", func() bool {
		return b.e.Actor().Snapshot().Lookup(tGPT4o, nowNs()).Blocked(nowNs())
	})
	// Facts flow again.
	b.e.Actor().ReportRetryAfter(tClaude, nowNs()+60*sec)
	waitFor(t, "A to learn B's new fact", func() bool {
		return a.e.Actor().Snapshot().Lookup(tClaude, nowNs()).Blocked(nowNs())
	})
	// A new replica loads both.
	c := newGateway(t, srv, baseConfig)
	waitFor(t, "C to connect", c.connected)
	// Connected means loaded and handed to the actor; Sync waits until
	// the actor has applied what it was handed.
	if err := c.e.Actor().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	snap := c.e.Actor().Snapshot()
	if !snap.Lookup(tGPT4o, nowNs()).Blocked(nowNs()) || !snap.Lookup(tClaude, nowNs()).Blocked(nowNs()) {
		t.Fatalf("C did not load the live facts: %+v", c.s.Stats())
	}
	if failed.Load() != 0 {
		t.Errorf("%d requests failed", failed.Load())
	}
	if st := a.s.Stats(); st.Connects < 2 {
		t.Errorf("A connected %d times, want 2 or more", st.Connects)
	}
}

// An ejected target whose cooldown ends is probed by one replica of two:
// the other holds it ejected until the probe's recovery arrives.
func TestProbeLockOneProbeForTheFleet(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newGateway(t, srv, baseConfig), newGateway(t, srv, baseConfig)
	waitFor(t, "both to connect", func() bool { return a.connected() && b.connected() })
	ctx := testCtx(t)

	var down atomic.Bool
	down.Store(true)
	call := func(_ context.Context, at engine.Attempt) policy.Outcome {
		if at.Target == "openai/gpt-4o" && down.Load() {
			return policy.Outcome{Status: http.StatusServiceUnavailable}
		}
		return policy.Outcome{Status: 200}
	}
	// Two failures eject gpt-4o on A; B learns the ejection.
	for range 2 {
		if _, err := a.e.Do(ctx, "openai/gpt-4o", call); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "B to learn the ejection", func() bool {
		return b.e.Actor().Snapshot().Lookup(tGPT4o, nowNs()).Ejected
	})
	down.Store(false)
	// Both replicas send requests until both see gpt-4o recovered.
	waitFor(t, "gpt-4o to recover on both", func() bool {
		for _, g := range []*gateway{a, b} {
			if _, err := g.e.Do(ctx, "openai/gpt-4o", call); err != nil {
				t.Fatal(err)
			}
		}
		return !a.e.Actor().Snapshot().Lookup(tGPT4o, nowNs()).Ejected &&
			!b.e.Actor().Snapshot().Lookup(tGPT4o, nowNs()).Ejected
	})
	if n := a.probes.Load() + b.probes.Load(); n != 1 {
		t.Fatalf("%d probes (A %d, B %d), want 1 for the fleet", n, a.probes.Load(), b.probes.Load())
	}
	sa, sb := a.s.Stats(), b.s.Stats()
	if sa.LocksWon+sb.LocksWon != 1 || sa.LocksLost+sb.LocksLost != 1 {
		t.Errorf("locks won %d+%d, lost %d+%d; want one of each", sa.LocksWon, sb.LocksWon, sa.LocksLost, sb.LocksLost)
	}
}

// A Redis that stops answering without closing its connections (the
// process paused): requests are answered all along, a fact made meanwhile
// is applied locally at once, the replica notices the silence and
// disconnects, and when Redis answers again it reconnects and the fact
// reaches the other replica.
func TestRedisStopsAnswering(t *testing.T) {
	srv := redistest.Start(t)
	doc := strings.Replace(baseConfig, "timeout: 500ms", "timeout: 100ms", 1)
	a, b := newGateway(t, srv, doc), newGateway(t, srv, doc)
	waitFor(t, "both to connect", func() bool { return a.connected() && b.connected() })
	ctx := testCtx(t)

	srv.Pause()
	defer srv.Resume() // before Stop, in case the test fails
	a.e.Actor().ReportRetryAfter(tGPT4o, nowNs()+60*sec)
	for range 200 {
		if _, err := a.e.Do(ctx, "openai/gpt-4o-mini", ok200); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.e.Actor().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.e.Actor().Snapshot().Lookup(tGPT4o, nowNs()); !st.Blocked(nowNs()) {
		t.Fatal("a local fact waited for Redis")
	}
	waitFor(t, "A to notice the silence", func() bool { return !a.connected() })
	if st := a.s.Stats(); st.SendErrors+st.Unsent == 0 {
		t.Errorf("the fact made while Redis was silent was neither a send error nor unsent: %+v", st)
	}
	srv.Resume()
	waitFor(t, "both to reconnect", func() bool { return a.connected() && b.connected() })
	waitFor(t, "B to learn A's fact", func() bool {
		return b.e.Actor().Snapshot().Lookup(tGPT4o, nowNs()).Blocked(nowNs())
	})
}

// Through two engines (consecutive_failures: 2): one request failing on
// gpt-4o through A and one through B eject it on both, though neither saw
// two in a row.
func TestFleetStreakThroughEngines(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newGateway(t, srv, baseConfig), newGateway(t, srv, baseConfig)
	waitFor(t, "both to connect", func() bool { return a.connected() && b.connected() })
	ctx := testCtx(t)
	call := func(_ context.Context, at engine.Attempt) policy.Outcome {
		if at.Target == "openai/gpt-4o" {
			return policy.Outcome{Status: http.StatusServiceUnavailable}
		}
		return policy.Outcome{Status: 200}
	}
	if _, err := a.e.Do(ctx, "openai/gpt-4o", call); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B to learn A's strike", func() bool { return b.e.Actor().Snapshot().Attention(tGPT4o) })
	if _, err := b.e.Do(ctx, "openai/gpt-4o", call); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "gpt-4o ejected on both", func() bool {
		return a.e.Actor().Snapshot().Lookup(tGPT4o, nowNs()).Ejected && b.e.Actor().Snapshot().Lookup(tGPT4o, nowNs()).Ejected
	})
}
