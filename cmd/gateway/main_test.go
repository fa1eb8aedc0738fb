package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/engine/httpproxy"
	"github.com/reroute-go/reroute/policy"
)

// syncBuffer is a bytes.Buffer the gateway's logger and the test can share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// gateway runs the command on a free loopback port with the configuration
// text; it returns the base URL and a function that stops it (as SIGTERM
// would) and returns run's error.
func gateway(t *testing.T, config string, extra ...string) (url string, stop func() error, logs *syncBuffer) {
	t.Helper()
	return gatewayWith(t, nil, config, extra...)
}

// gatewayWith is gateway with the channel a second signal closes.
func gatewayWith(t *testing.T, now <-chan struct{}, config string, extra ...string) (url string, stop func() error, logs *syncBuffer) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "reroute.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs = &syncBuffer{}
	addr := make(chan string, 1)
	done := make(chan error, 1)
	args := append([]string{"-config", path, "-addr", "127.0.0.1:0"}, extra...)
	go func() { done <- run(ctx, now, args, logs, func(a string) { addr <- a }) }()
	select {
	case a := <-addr:
		url = "http://" + a
	case err := <-done:
		cancel()
		t.Fatalf("run: %v\n%s", err, logs)
	}
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return url, stop, logs
}

func upstream(t *testing.T, h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func answer(model string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","model":"`+model+`","choices":[]}`)
	}
}

func post(t *testing.T, url, body string) (*http.Response, string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// In front of two providers: the primary's 429 fails over; the warnings
// are logged once each; a stop shuts the gateway down cleanly.
func TestGateway(t *testing.T) {
	gotKey := make(chan string, 1)
	primary := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(429)
		io.WriteString(w, `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
	})
	secondary := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		gotKey <- r.Header.Get("X-Api-Key")
		answer("claude-3-5-sonnet")(w, r)
	})
	t.Setenv("TEST_ANTHROPIC_KEY", "sk-ant-test")
	url, stop, logs := gateway(t, `
model_providers:
  - model: openai/gpt-4o
    base_url: `+primary.URL+`/v1
    access_key: $TEST_OPENAI_KEY_NOT_SET
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]
      on_high_latency: {threshold_ms: 500, strategy: different_provider, max_attempts: 2}
  - model: anthropic/claude-3-5-sonnet
    base_url: `+secondary.URL+`/v1
    access_key: $TEST_ANTHROPIC_KEY
    provider_interface: anthropic
`)
	resp, body := post(t, url, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != "anthropic/claude-3-5-sonnet" || !strings.Contains(body, `"model":"claude-3-5-sonnet"`) {
		t.Errorf("status %d, target %q: %s", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), body)
	}
	if k := <-gotKey; k != "sk-ant-test" {
		t.Errorf("the secondary got x-api-key %q", k)
	}
	if err := stop(); err != nil {
		t.Fatalf("run after stop: %v", err)
	}
	var warnings, stopped int
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var e struct {
			Level, Msg, Path string
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		switch {
		case strings.Contains(e.Msg, "configuration warning"):
			warnings++
		case e.Msg == "gateway stopped":
			stopped++
		}
	}
	// threshold_ms below 1000, and $TEST_OPENAI_KEY_NOT_SET: two
	// warnings, each logged once.
	if warnings != 2 || stopped != 1 {
		t.Errorf("%d warnings, %d stops logged:\n%s", warnings, stopped, logs)
	}
	if strings.Contains(logs.String(), "sk-ant-test") {
		t.Error("a key reached the logs")
	}
}

// A configuration warning is printed once at start, with its file, path
// and line: the engine does not log it again for a configuration Load
// already finalized.
func TestWarningLoggedOnce(t *testing.T) {
	_, stop, logs := gateway(t, `
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:1/v1
    access_key: $GATEWAY_TEST_KEY_NOT_SET
`)
	if err := stop(); err != nil {
		t.Fatalf("run after stop: %v", err)
	}
	var warnings []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var e struct {
			Level, Msg, Path, File, Warning string
			Line                            int
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if e.Level == "warn" || strings.Contains(e.Msg, "warning") || strings.Contains(line, "GATEWAY_TEST_KEY_NOT_SET") {
			warnings = append(warnings, line)
			if e.Msg != "configuration warning" || e.Path != "model_providers[0].access_key" || e.Line != 5 ||
				!strings.HasSuffix(e.File, "reroute.yaml") || !strings.Contains(e.Warning, "GATEWAY_TEST_KEY_NOT_SET") {
				t.Errorf("warning line %s", line)
			}
		}
	}
	if len(warnings) != 1 {
		t.Errorf("%d warning lines, want 1:\n%s", len(warnings), logs)
	}
}

// A configuration with errors: nothing starts, every problem is printed.
func TestRefusesInvalidConfiguration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(path, []byte(`
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:1/v1
    retry_policy:
      backoff: {base_ms: 100}
      on_status_codes: [{codes: [700], strategy: same_model, max_attempts: 2}]
`), 0o600)
	var out syncBuffer
	err := run(context.Background(), nil, []string{"-config", path, "-addr", "127.0.0.1:0"}, &out, func(string) {
		t.Error("the gateway started")
	})
	if err == nil || !strings.Contains(out.String(), "backoff.apply_to") || !strings.Contains(out.String(), "codes[0]") {
		t.Errorf("run = %v; printed:\n%s", err, out.String())
	}
	// A provider without base_url is an error for the gateway.
	os.WriteFile(path, []byte("model_providers:\n  - model: openai/gpt-4o\n"), 0o600)
	out = syncBuffer{}
	if err := run(context.Background(), nil, []string{"-config", path}, &out, nil); err == nil || !strings.Contains(out.String(), "base_url") {
		t.Errorf("run = %v; printed:\n%s", err, out.String())
	}
	if err := run(context.Background(), nil, []string{"-nope"}, &out, nil); err != errUsage {
		t.Errorf("bad flag: %v", err)
	}
}

// A stop lets the request in flight finish, then the gateway ends.
func TestGracefulShutdown(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	slow := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		<-release
		answer("gpt-4o")(w, r)
	})
	url, stop, _ := gateway(t, `
model_providers:
  - model: openai/gpt-4o
    base_url: `+slow.URL+`/v1
    access_key: sk-test
`)
	type result struct {
		status int
		body   string
	}
	got := make(chan result, 1)
	go func() {
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"gpt-4o","messages":[]}`))
		if err != nil {
			got <- result{body: err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- result{resp.StatusCode, string(b)}
	}()
	<-arrived
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// Shutdown has begun once the listener refuses new connections; the
	// request in flight must still be answered.
	host := strings.TrimPrefix(url, "http://")
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", host)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the gateway kept accepting connections after stop")
		}
		runtime.Gosched()
	}
	select {
	case r := <-got:
		t.Fatalf("the request ended before the upstream answered: %+v", r)
	default:
	}
	close(release)
	if r := <-got; r.status != 200 || !strings.Contains(r.body, "chatcmpl-1") {
		t.Errorf("request in flight: %+v", r)
	}
	if err := <-stopped; err != nil {
		t.Errorf("run: %v", err)
	}
}

// SIGTERM (and SIGINT) end signalContext's context instead of the
// process; a second one closes now, which ends the grace period.
func TestSignalContext(t *testing.T) {
	for _, second := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		ctx, now, stop := signalContext()
		if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("SIGTERM did not end the context")
		}
		select {
		case <-now:
			t.Fatal("now closed at the first signal")
		default:
		}
		if err := syscall.Kill(os.Getpid(), second); err != nil {
			t.Fatal(err)
		}
		select {
		case <-now:
		case <-time.After(5 * time.Second):
			t.Fatalf("a second signal (%v) did not close now", second)
		}
		stop()
		stop()
	}
}

// examples/gateway.yaml, which docs/gateway.md's quick start uses, loads
// without errors or warnings and builds a gateway.
func TestExampleConfiguration(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-example")
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-example")
	cfg, warns, err := policy.Load("../../examples/gateway.yaml")
	if err != nil || len(warns) > 0 {
		t.Fatalf("Load: %v, warnings %v", err, warns)
	}
	e, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	h, err := httpproxy.New(e)
	if err != nil {
		t.Fatal(err)
	}
	h.CloseIdleConnections()
}

// At start the gateway says which policies may fail over to targets they
// do not list, and which targets; a policy restricted to its list is not
// named.
func TestWarnsOfUnlistedFailover(t *testing.T) {
	_, stop, logs := gateway(t, `
model_providers:
  - model: openai/gpt-4o
    base_url: http://127.0.0.1:1/v1
    retry_policy: {fallback_models: [anthropic/claude-3-5-sonnet], default_strategy: different_provider}
  - model: anthropic/claude-3-5-sonnet
    base_url: http://127.0.0.1:1/v1
    retry_policy: {default_strategy: different_provider, unlisted_failover: none, fallback_models: [openai/gpt-4o]}
  - model: mistral/mistral-embed
    base_url: http://127.0.0.1:1/v1
`)
	if err := stop(); err != nil {
		t.Fatalf("run after stop: %v", err)
	}
	var found []string
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if m["msg"] != "policy may fail over to targets it does not list" {
			continue
		}
		found = append(found, line)
		if m["path"] != "model_providers[0].retry_policy" || m["unlisted_failover"] != "any" || fmt.Sprint(m["targets"]) != "[mistral/mistral-embed]" {
			t.Errorf("warning %s", line)
		}
	}
	if len(found) != 1 {
		t.Errorf("%d unlisted-failover warnings, want 1:\n%s", len(found), logs)
	}
}

// streamer is an upstream that sends one event of a stream and then waits
// for the request's end: a stream in flight for as long as the test needs.
func streamer(t *testing.T) (*httptest.Server, string) {
	ev := `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi"}}]}` + "\n\n"
	return upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ev)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}), ev
}

// openStream starts a stream through the gateway and reads its first
// event; the rest of the body is the caller's to read.
func openStream(t *testing.T, url, first string) *bufio.Reader {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"gpt-4o","stream":true,"messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	br := bufio.NewReader(resp.Body)
	got := make([]byte, len(first))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != first {
		t.Fatalf("first event %q, %v", got, err)
	}
	return br
}

// wantShutdownEvent reads the rest of a stream: one in-band error event of
// code gateway_shutting_down, no [DONE], then the end.
func wantShutdownEvent(t *testing.T, br *bufio.Reader) {
	t.Helper()
	rest, err := io.ReadAll(br)
	var ev struct{ Error struct{ Code string } }
	s := string(rest)
	if err != nil || !strings.HasPrefix(s, "data: ") || !strings.HasSuffix(s, "\n\n") || strings.Contains(s, "[DONE]") ||
		json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(s, "data: "))), &ev) != nil || ev.Error.Code != "gateway_shutting_down" {
		t.Errorf("after the first event: %q, %v; want the gateway_shutting_down event, then the end", s, err)
	}
}

// A stream still running when the grace period ends gets the in-band
// error event, then the end, like every other failure after commit.
func TestShutdownEndsStreams(t *testing.T) {
	up, first := streamer(t)
	url, stop, _ := gateway(t, config(up.URL), "-shutdown-timeout", "200ms")
	br := openStream(t, url, first)
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	wantShutdownEvent(t, br)
	if err := <-stopped; err != nil {
		t.Errorf("run: %v", err)
	}
}

// A second signal during the grace period ends it at once: the stream in
// flight gets its error event, the gateway says why in the log, and run
// returns errForced (exit status 1) long before the grace period's end.
func TestSecondSignalEndsGracePeriod(t *testing.T) {
	up, first := streamer(t)
	now := make(chan struct{})
	url, stop, logs := gatewayWith(t, now, config(up.URL), "-shutdown-timeout", "1h")
	br := openStream(t, url, first)
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// The grace period has begun once the listener refuses connections.
	host := strings.TrimPrefix(url, "http://")
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", host)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the gateway kept accepting connections after stop")
		}
		runtime.Gosched()
	}
	close(now)
	wantShutdownEvent(t, br)
	select {
	case err := <-stopped:
		if !errors.Is(err, errForced) {
			t.Errorf("run: %v, want errForced", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway did not stop at the second signal")
	}
	if !strings.Contains(logs.String(), "second signal: ending the shutdown grace period at once") {
		t.Errorf("no log line for the second signal:\n%s", logs)
	}
}
