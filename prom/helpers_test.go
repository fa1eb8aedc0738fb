package prom_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
	"github.com/reroute-go/reroute/prom"
)

// twoTargets is the configuration of most tests: a primary that fails over
// to a secondary of another provider on 429 and 503, a third target that
// is nobody's fallback, and passive health that ejects after two failures
// in a row.
const twoTargets = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      on_status_codes: [{codes: [429, 503], strategy: different_provider, max_attempts: 2}]
  - model: anthropic/claude-3-5-sonnet
  - model: mistral/mistral-large
engine:
  passive_health: {consecutive_failures: 2, cooldown: 10s, max_cooldown: 10s}
`

func mustConfig(t testing.TB, y string) *policy.Config {
	t.Helper()
	cfg, _, err := policy.Parse([]byte(strings.TrimSpace(y)))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return cfg
}

// newEngine builds a collector and an engine wired to it, the way a host
// does, and closes the engine at the end of the test.
func newEngine(t testing.TB, y string, opts ...engine.Option) (*prom.Collector, *engine.Engine) {
	t.Helper()
	cfg := mustConfig(t, y)
	col := prom.New(cfg.Compiled())
	e, err := engine.New(cfg, append([]engine.Option{engine.WithHooks(col.Hooks())}, opts...)...)
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	if err := col.Attach(e); err != nil {
		t.Fatalf("Attach: %v", err)
	}
	return col, e
}

// answer is one scripted answer of a fake upstream.
type answer struct {
	status     int
	retryAfter int           // seconds; 0 sends no Retry-After
	ttfb       time.Duration // reported as TTFB, and twice it as Total
}

// script is a fake of every target: each answers its answers in order,
// repeating the last one.
type script struct {
	mu      sync.Mutex
	answers map[string][]answer
	calls   map[string]int
}

func newScript(answers map[string][]answer) *script {
	return &script{answers: answers, calls: map[string]int{}}
}

func (s *script) call(_ context.Context, a engine.Attempt) policy.Outcome {
	s.mu.Lock()
	as := s.answers[a.Target]
	n := s.calls[a.Target]
	s.calls[a.Target]++
	s.mu.Unlock()
	if len(as) == 0 {
		return policy.Outcome{Status: 200}
	}
	an := as[min(n, len(as)-1)]
	o := policy.Outcome{Status: an.status, TTFB: an.ttfb, Total: 2 * an.ttfb}
	if an.retryAfter > 0 {
		o.Header = http.Header{"Retry-After": {strconv.Itoa(an.retryAfter)}}
	}
	return o
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// The targets of twoTargets, and its identifier names (targets, then
// providers).
var (
	targets = []string{"openai/gpt-4o", "anthropic/claude-3-5-sonnet", "mistral/mistral-large"}
	idNames = append(slices.Clone(targets), "openai", "anthropic", "mistral")
)

// zeroAttempts renders reroute_attempts_total for every target of
// twoTargets and every class: the value of "target class" in nonzero,
// else 0.
func zeroAttempts(nonzero map[string]int) string {
	var b strings.Builder
	for _, t := range targets {
		for _, c := range []string{"success", "slow_success", "http_error", "timeout", "high_latency", "pass_through"} {
			fmt.Fprintf(&b, "reroute_attempts_total{class=%q,target=%q} %d\n", c, t, nonzero[t+" "+c])
		}
	}
	return b.String()
}

// zeroActive renders reroute_blocks_active for every identifier of
// twoTargets and every kind: the value of "id kind" in nonzero, else 0.
func zeroActive(nonzero map[string]int) string {
	var b strings.Builder
	for _, id := range idNames {
		for _, k := range []string{"retry_after", "latency", "ejected"} {
			fmt.Fprintf(&b, "reroute_blocks_active{id=%q,kind=%q} %d\n", id, k, nonzero[id+" "+k])
		}
	}
	return b.String()
}

// perID renders a counter labelled by identifier, perTarget one labelled
// by target: the value in nonzero, else 0.
func perID(name string, nonzero map[string]int) string { return perLabel(name, "id", idNames, nonzero) }

func perTarget(name string, nonzero map[string]int) string {
	return perLabel(name, "target", targets, nonzero)
}

func perLabel(name, label string, values []string, nonzero map[string]int) string {
	var b strings.Builder
	for _, v := range values {
		fmt.Fprintf(&b, "%s{%s=%q} %d\n", name, label, v, nonzero[v])
	}
	return b.String()
}

// histogram renders a histogram series with the given labels ("" for
// none), bucket bounds and observations, in the order observed (so that
// the sum is the same float).
func histogram(name, labels string, bounds []float64, obs ...float64) string {
	var b strings.Builder
	sep := ""
	if labels != "" {
		sep = ","
	}
	for _, le := range bounds {
		n := 0
		for _, o := range obs {
			if o <= le {
				n++
			}
		}
		fmt.Fprintf(&b, "%s_bucket{%s%sle=%q} %d\n", name, labels, sep, strconv.FormatFloat(le, 'g', -1, 64), n)
	}
	fmt.Fprintf(&b, "%s_bucket{%s%sle=\"+Inf\"} %d\n", name, labels, sep, len(obs))
	sum := 0.0
	for _, o := range obs {
		sum += o
	}
	braces := ""
	if labels != "" {
		braces = "{" + labels + "}"
	}
	fmt.Fprintf(&b, "%s_sum%s %s\n%s_count%s %d\n", name, braces, strconv.FormatFloat(sum, 'g', -1, 64), name, braces, len(obs))
	return b.String()
}
