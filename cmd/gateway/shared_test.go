package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reroute-go/reroute/redishealth/redistest"
)

// sharedConfig is a gateway in front of primary and fallback, sharing
// health through the Redis at addr.
func sharedConfig(primary, fallback, addr string) string {
	return `
model_providers:
  - model: openai/gpt-4o
    base_url: ` + primary + `/v1
    access_key: sk-test
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      default_strategy: different_provider
  - model: anthropic/claude-3-5-sonnet
    base_url: ` + fallback + `/v1
    access_key: sk-ant-test
    provider_interface: anthropic
engine:
  shared_health:
    address: "` + addr + `"
    max_backoff: 100ms
`
}

// Two gateways share one Redis: a 429 with Retry-After: 30 that gateway A
// sees makes gateway B skip that target without sending it anything.
func TestSharedHealthBetweenGateways(t *testing.T) {
	srv := redistest.Start(t)
	var primaryCalls atomic.Int32
	primary := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		primaryCalls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(429)
		io.WriteString(w, `{"error":{"message":"Rate limit reached for gpt-4o in organization org-x on requests per min (RPM): Limit 500, Used 500, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
	})
	fallback := upstream(t, answer("claude-3-5-sonnet"))
	cfg := sharedConfig(primary.URL, fallback.URL, srv.Addr)
	urlA, stopA, logsA := gateway(t, cfg)
	urlB, stopB, _ := gateway(t, cfg)
	defer stopA()
	defer stopB()
	shared := func(url string) sharedJSON {
		_, body := get(t, url+pathShared)
		var s sharedJSON
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("%s: %v: %s", pathShared, err, body)
		}
		return s
	}
	waitUntil(t, "both gateways to connect", func() bool { return shared(urlA).Connected && shared(urlB).Connected })

	resp, _ := post(t, urlA, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != "anthropic/claude-3-5-sonnet" || primaryCalls.Load() != 1 {
		t.Fatalf("A: status %d via %q, primary called %d times", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), primaryCalls.Load())
	}
	waitUntil(t, "B to receive A's fact", func() bool { return shared(urlB).FactsReceived == 1 })
	_, blocks := get(t, urlB+pathBlocks)
	if !strings.Contains(blocks, `"id":"openai/gpt-4o","kind":"retry_after"`) {
		t.Fatalf("B's blocks: %s", blocks)
	}
	resp, _ = post(t, urlB, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != "anthropic/claude-3-5-sonnet" {
		t.Fatalf("B: status %d via %q", resp.StatusCode, resp.Header.Get("X-Reroute-Target"))
	}
	if n := primaryCalls.Load(); n != 1 {
		t.Fatalf("the primary was called %d times; B should have skipped it", n)
	}
	_, metrics := get(t, urlB+pathMetrics)
	m := samples(t, metrics)
	if m["reroute_shared_health_connected"] != 1 || m[`reroute_shared_health_facts_total{direction="received"}`] != 1 {
		t.Errorf("B's shared-health metrics: connected %v, received %v", m["reroute_shared_health_connected"], m[`reroute_shared_health_facts_total{direction="received"}`])
	}
	if v, ok := m["reroute_shared_health_replayed_total"]; !ok || v != 0 {
		t.Errorf("B's reroute_shared_health_replayed_total = %v (exported: %v), want 0", v, ok)
	}
	if a := shared(urlA); a.FactsSent != 1 || a.DelaySamples != 0 {
		t.Errorf("A: %+v", a)
	}
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logsA.String(), `"msg":"shared_health`) && !strings.Contains(logsA.String(), "connected to Redis") {
		t.Errorf("A did not log its connection:\n%s", logsA)
	}
}

// waitUntil polls cond until it holds or a generous deadline passes.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // the poll interval of a condition wait
	}
}

// A gateway whose Redis is unreachable starts and serves on its own
// state, and says so.
func TestSharedHealthRedisDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	fallback := upstream(t, answer("claude-3-5-sonnet"))
	primary := upstream(t, answer("gpt-4o"))
	url, stop, logs := gateway(t, sharedConfig(primary.URL, fallback.URL, addr))
	defer stop()
	for range 20 {
		resp, _ := post(t, url, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != "openai/gpt-4o" {
			t.Fatalf("status %d via %q", resp.StatusCode, resp.Header.Get("X-Reroute-Target"))
		}
	}
	waitUntil(t, "a failed connection attempt", func() bool {
		_, body := get(t, url+pathShared)
		var s sharedJSON
		return json.Unmarshal([]byte(body), &s) == nil && !s.Connected && s.ConnectErrors > 0
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "cannot connect to Redis; serving on local state") {
		t.Errorf("no warning about the connection:\n%s", logs)
	}
}
