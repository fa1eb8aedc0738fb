package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/reroute-go/reroute/redishealth/redistest"
)

// startProcess starts the gateway binary bin on config and returns its
// address once it listens; it is stopped (SIGTERM, then waited for) when
// the test ends.
func startProcess(t *testing.T, bin, config string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "reroute.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", path, "-addr", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "gateway listening" {
				addr <- line.Addr
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		<-drained
		_ = cmd.Wait()
	})
	select {
	case a := <-addr:
		return "http://" + a
	case <-drained:
		t.Fatal("the gateway process exited before listening")
	case <-time.After(30 * time.Second):
		t.Fatal("the gateway process did not listen within 30 s")
	}
	return ""
}

// TestSharedHealthBetweenGateways with two gateway processes built from
// this package.
func TestSharedHealthBetweenProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the gateway binary")
	}
	srv := redistest.Start(t)
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH:", err)
	}
	bin := filepath.Join(t.TempDir(), "gateway")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
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
	urlA, urlB := startProcess(t, bin, cfg), startProcess(t, bin, cfg)
	shared := func(url string) sharedJSON {
		_, body := get(t, url+pathShared)
		var s sharedJSON
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("%s: %v: %s", pathShared, err, body)
		}
		return s
	}
	waitUntil(t, "both processes to connect", func() bool { return shared(urlA).Connected && shared(urlB).Connected })
	resp, _ := post(t, urlA, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || primaryCalls.Load() != 1 {
		t.Fatalf("A: status %d, primary called %d times", resp.StatusCode, primaryCalls.Load())
	}
	waitUntil(t, "B to receive A's fact", func() bool { return shared(urlB).FactsReceived == 1 })
	resp, _ = post(t, urlB, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != "anthropic/claude-3-5-sonnet" {
		t.Fatalf("B: status %d via %q", resp.StatusCode, resp.Header.Get("X-Reroute-Target"))
	}
	if n := primaryCalls.Load(); n != 1 {
		t.Fatalf("the primary was called %d times; B should have skipped it", n)
	}
}

// TestSharedHealthPropagationBetweenProcesses: two gateway processes, one
// Redis and 1,000 targets; each target's 429 with Retry-After: 30 seen by
// A becomes a fact that B receives and honours. It logs the propagation
// delay B observed (publish to receipt, per message) for docs/shared-health.md.
func TestSharedHealthPropagationBetweenProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the gateway binary")
	}
	const n = 1000
	srv := redistest.Start(t)
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("no go command in PATH:", err)
	}
	bin := filepath.Join(t.TempDir(), "gateway")
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var primaryCalls atomic.Int32
	primary := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		primaryCalls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(429)
		io.WriteString(w, `{"error":{"message":"Rate limit reached.","type":"requests","code":"rate_limit_exceeded"}}`)
	})
	fallback := upstream(t, answer("claude-3-5-sonnet"))
	var cfg strings.Builder
	cfg.WriteString("model_providers:\n")
	for i := range n {
		fmt.Fprintf(&cfg, "  - model: openai/m%d\n    base_url: %s/v1\n    access_key: sk-test\n    retry_policy: {fallback_models: [anthropic/claude-3-5-sonnet], default_strategy: different_provider}\n", i, primary.URL)
	}
	fmt.Fprintf(&cfg, "  - model: anthropic/claude-3-5-sonnet\n    base_url: %s/v1\n    access_key: sk-ant-test\n    provider_interface: anthropic\nengine:\n  shared_health:\n    address: %q\n    max_backoff: 100ms\n", fallback.URL, srv.Addr)
	urlA, urlB := startProcess(t, bin, cfg.String()), startProcess(t, bin, cfg.String())
	shared := func(url string) sharedJSON {
		_, body := get(t, url+pathShared)
		var s sharedJSON
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("%s: %v: %s", pathShared, err, body)
		}
		return s
	}
	waitUntil(t, "both processes to connect", func() bool { return shared(urlA).Connected && shared(urlB).Connected })
	for i := range n {
		resp, _ := post(t, urlA, fmt.Sprintf(`{"model":"openai/m%d","messages":[{"role":"user","content":"hi"}]}`, i))
		if resp.StatusCode != 200 {
			t.Fatalf("A, openai/m%d: status %d", i, resp.StatusCode)
		}
	}
	waitUntil(t, "B to receive every fact", func() bool { return shared(urlB).FactsReceived >= n })
	before := primaryCalls.Load()
	for _, i := range []int{0, n / 2, n - 1} {
		resp, _ := post(t, urlB, fmt.Sprintf(`{"model":"openai/m%d","messages":[{"role":"user","content":"hi"}]}`, i))
		if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != "anthropic/claude-3-5-sonnet" {
			t.Fatalf("B, openai/m%d: status %d via %q", i, resp.StatusCode, resp.Header.Get("X-Reroute-Target"))
		}
	}
	if got := primaryCalls.Load(); got != before {
		t.Fatalf("B called the blocked primary %d times", got-before)
	}
	s := shared(urlB)
	t.Logf("%d facts from A to B in %d messages: propagation delay p50 %.3f ms, p99 %.3f ms", s.FactsReceived, s.DelaySamples, s.DelayP50Ms, s.DelayP99Ms)
}
