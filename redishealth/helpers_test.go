package redishealth

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
	"github.com/reroute-go/reroute/redishealth/redistest"
)

// baseConfig: gpt-4o falls back to claude; retry-after capped at 300 s,
// latency blocks of 60 s on gpt-4o, passive health on every target. ADDR
// is replaced by the test server's address.
const baseConfig = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      default_strategy: different_provider
      default_max_attempts: 2
      on_high_latency: {threshold_ms: 1000, strategy: different_provider, max_attempts: 2, block_duration_seconds: 60}
  - model: anthropic/claude-3-5-sonnet
  - model: openai/gpt-4o-mini
engine:
  passive_health: {consecutive_failures: 2, cooldown: 1s, max_cooldown: 4s}
  shared_health: {address: "ADDR", timeout: 500ms, max_backoff: 100ms, probe_lock_ttl: 3s}
`

// Identifiers of baseConfig.
const (
	tGPT4o = iota
	tClaude
	tMini
)

func mustConfig(t testing.TB, doc, addr string) *policy.Config {
	t.Helper()
	cfg, _, err := policy.Parse([]byte(strings.ReplaceAll(doc, "ADDR", addr)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// replica is one actor with its Sharer; applied receives every fact the
// Sharer imported.
type replica struct {
	a       *health.Actor
	s       *Sharer
	applied chan health.Fact
}

func newReplica(t testing.TB, srv *redistest.Server, doc string) *replica {
	t.Helper()
	cfg := mustConfig(t, doc, srv.Addr)
	r := &replica{applied: make(chan health.Fact, 4096)}
	s, err := New(cfg.Engine.SharedHealth, cfg.Compiled(), WithOnApply(func(f health.Fact) {
		select {
		case r.applied <- f:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	r.s = s
	r.a = health.New(cfg.Compiled(), s.HealthOption())
	if err := s.Start(r.a); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = s.Close()
		r.a.Stop()
	})
	return r
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond) // the poll interval of a condition wait, not a wait for an event
	}
}

func (r *replica) waitConnected(t testing.TB) {
	t.Helper()
	waitFor(t, "the replica to connect", func() bool { return r.s.Stats().Connected })
}

// next waits for the next fact the replica imports.
func (r *replica) next(t testing.TB) health.Fact {
	t.Helper()
	select {
	case f := <-r.applied:
		// Import queued it: Sync has the actor apply it.
		if err := r.a.Sync(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		return f
	case <-time.After(15 * time.Second):
		t.Fatal("timed out waiting for an imported fact")
	}
	return health.Fact{}
}

func rawClient(t testing.TB, srv *redistest.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr, Protocol: 2, DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func nowNs() int64 { return time.Now().UnixNano() }
