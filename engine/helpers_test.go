package engine

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reroute-go/reroute/policy"
)

// mustConfig parses a YAML configuration or fails the test.
func mustConfig(t testing.TB, y string) *policy.Config {
	t.Helper()
	cfg, _, err := policy.Parse([]byte(strings.TrimSpace(y)))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return cfg
}

func mustEngine(t testing.TB, y string, opts ...Option) *Engine {
	t.Helper()
	e, err := New(mustConfig(t, y), opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// step is one scripted answer of a fake upstream.
type step struct {
	status     int
	retryAfter string
	latency    time.Duration // reported as TTFB and Total
	hang       bool          // wait for the attempt's context to end
}

// upstreams is a scripted fake of every target: each target answers its
// steps in order, repeating the last one. It records every call.
type upstreams struct {
	mu     sync.Mutex
	script map[string][]step
	calls  []string
}

func newUpstreams(script map[string][]step) *upstreams {
	return &upstreams{script: script}
}

func (u *upstreams) call(ctx context.Context, a Attempt) policy.Outcome {
	u.mu.Lock()
	n := 0
	for _, c := range u.calls {
		if c == a.Target {
			n++
		}
	}
	u.calls = append(u.calls, a.Target)
	steps := u.script[a.Target]
	u.mu.Unlock()
	if len(steps) == 0 {
		return policy.Outcome{Status: 200}
	}
	s := steps[min(n, len(steps)-1)]
	if s.hang {
		<-ctx.Done()
		return policy.Outcome{Err: ctx.Err()}
	}
	o := policy.Outcome{Status: s.status, TTFB: s.latency, Total: s.latency}
	if s.retryAfter != "" {
		o.Header = http.Header{"Retry-After": {s.retryAfter}}
	}
	return o
}

func (u *upstreams) count(target string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.calls {
		if c == target {
			n++
		}
	}
	return n
}

func (u *upstreams) order() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.calls...)
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	t.Cleanup(cancel)
	return ctx
}

// asExhausted returns err as an *ExhaustedError or fails the test.
func asExhausted(t testing.TB, err error) *ExhaustedError {
	t.Helper()
	var ex *ExhaustedError
	if !errors.As(err, &ex) {
		t.Fatalf("err = %v, want *ExhaustedError", err)
	}
	return ex
}

// exhaustedBody is the JSON body of docs/behaviour.md#the-error-response, as a client decodes it.
type exhaustedBody struct {
	Error struct {
		Message  string `json:"message"`
		Type     string `json:"type"`
		Attempts []struct {
			Model     string `json:"model"`
			ErrorType string `json:"error_type"`
			Attempt   int    `json:"attempt"`
		} `json:"attempts"`
		TotalAttempts   int      `json:"total_attempts"`
		MaxRetryAfter   *float64 `json:"observed_max_retry_after_seconds"`
		ShortestBlock   *float64 `json:"shortest_remaining_block_seconds"`
		BudgetExhausted *bool    `json:"retry_budget_exhausted"`
		Ejected         []string `json:"ejected_targets"`
	} `json:"error"`
}

// render writes ex as an HTTP response and decodes its body.
func render(t testing.TB, ex *ExhaustedError) (*httptest.ResponseRecorder, exhaustedBody) {
	t.Helper()
	rec := httptest.NewRecorder()
	ex.WriteHTTP(rec, "req-1")
	var b exhaustedBody
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	return rec, b
}
