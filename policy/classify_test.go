package policy

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"
)

const ms = time.Millisecond

// rulesOf parses a configuration built by withPolicy and returns the
// primary's compiled rules.
func rulesOf(t testing.TB, body string) *Rules {
	t.Helper()
	cfg, _ := mustParse(t, withPolicy(body))
	return cfg.Compiled().Rules[0]
}

func TestClassify(t *testing.T) {
	ttfb := rulesOf(t, `
on_high_latency:
  threshold_ms: 1000
  strategy: different_provider
  max_attempts: 2`)
	total := rulesOf(t, `
on_high_latency:
  threshold_ms: 1000
  measure: total
  strategy: different_provider
  max_attempts: 2`)
	plain := rulesOf(t, `{}`)
	timeout := context.DeadlineExceeded
	abandoned := fmt.Errorf("attempt 2: %w", ErrHighLatency)

	tests := []struct {
		name      string
		rules     *Rules
		o         Outcome
		class     Class
		event     bool
		measured  time.Duration
		retriable bool
	}{
		// No retry policy: everything passes through after one attempt.
		{"nil rules, 200", nil, Outcome{Status: 200}, PassThrough, false, 0, false},
		{"nil rules, 429", nil, Outcome{Status: 429}, PassThrough, false, 0, false},
		{"nil rules, timeout", nil, Outcome{Err: timeout, Total: 5 * time.Second}, PassThrough, false, 0, false},

		// 2xx.
		{"200 fast", ttfb, Outcome{Status: 200, TTFB: 500 * ms, Total: 3 * time.Second}, Success, false, 0, false},
		{"200 at the threshold is not slow", ttfb, Outcome{Status: 200, TTFB: 1000 * ms}, Success, false, 0, false},
		{"200 one nanosecond over is slow", ttfb, Outcome{Status: 200, TTFB: 1000*ms + 1}, SlowSuccess, true, 1000*ms + 1, false},
		{"201 slow", ttfb, Outcome{Status: 201, TTFB: 1500 * ms}, SlowSuccess, true, 1500 * ms, false},
		{"299 fast", ttfb, Outcome{Status: 299, TTFB: 10 * ms}, Success, false, 0, false},
		{"measure total: slow total, fast ttfb", total, Outcome{Status: 200, TTFB: 100 * ms, Total: 1500 * ms}, SlowSuccess, true, 1500 * ms, false},
		{"measure total: slow ttfb, fast total", total, Outcome{Status: 200, TTFB: 999 * ms, Total: 1000 * ms}, Success, false, 0, false},
		{"measure ttfb: slow total ignored", ttfb, Outcome{Status: 200, TTFB: 100 * ms, Total: 9 * time.Second}, Success, false, 0, false},
		{"no latency rule: slow 200 is a success", plain, Outcome{Status: 200, TTFB: time.Minute}, Success, false, 0, false},

		// 4xx and 5xx: retriable whether listed or not, never a latency event.
		{"429", ttfb, Outcome{Status: 429}, HTTPError, false, 0, true},
		{"400", ttfb, Outcome{Status: 400}, HTTPError, false, 0, true},
		{"599", plain, Outcome{Status: 599}, HTTPError, false, 0, true},
		{"503 slow is not a latency event", ttfb, Outcome{Status: 503, TTFB: 5 * time.Second}, HTTPError, false, 0, true},

		// 1xx, 3xx and nonsense: returned as they are.
		{"100", ttfb, Outcome{Status: 100}, PassThrough, false, 0, false},
		{"101", plain, Outcome{Status: 101}, PassThrough, false, 0, false},
		{"302", ttfb, Outcome{Status: 302, TTFB: 5 * time.Second}, PassThrough, false, 0, false},
		{"304", plain, Outcome{Status: 304}, PassThrough, false, 0, false},
		{"399", plain, Outcome{Status: 399}, PassThrough, false, 0, false},
		{"600", plain, Outcome{Status: 600}, PassThrough, false, 0, false},
		{"no status, no error", plain, Outcome{}, PassThrough, false, 0, false},

		// Final: the caller knows the answer must be delivered as it is.
		{"final 400", ttfb, Outcome{Status: 400, Final: true}, PassThrough, false, 0, false},
		{"final 429", plain, Outcome{Status: 429, Final: true}, PassThrough, false, 0, false},
		{"final slow 200: no event", ttfb, Outcome{Status: 200, TTFB: 5 * time.Second, Final: true}, PassThrough, false, 0, false},
		{"NoSameTarget still classifies", ttfb, Outcome{Status: 400, NoSameTarget: true}, HTTPError, false, 0, true},

		// Timeouts and transport errors.
		{"timeout under the threshold", ttfb, Outcome{Err: timeout, Total: 800 * ms}, Timeout, false, 0, true},
		{"timeout over the threshold records an event", ttfb, Outcome{Err: timeout, Total: 2 * time.Second}, Timeout, true, 2 * time.Second, true},
		{"timeout after headers: ttfb measured", ttfb, Outcome{Err: io.ErrUnexpectedEOF, TTFB: 1500 * ms, Total: 30 * time.Second}, Timeout, true, 1500 * ms, true},
		{"timeout after fast headers: no event", ttfb, Outcome{Err: io.ErrUnexpectedEOF, TTFB: 200 * ms, Total: 30 * time.Second}, Timeout, false, 0, true},
		{"timeout, measure total", total, Outcome{Err: timeout, TTFB: 200 * ms, Total: 1200 * ms}, Timeout, true, 1200 * ms, true},
		{"error wins over a status", ttfb, Outcome{Status: 200, Err: io.ErrUnexpectedEOF}, Timeout, false, 0, true},
		{"timeout without latency rule", plain, Outcome{Err: timeout, Total: time.Hour}, Timeout, false, 0, true},

		// Abandoned for latency.
		{"abandoned: always an event", ttfb, Outcome{Err: abandoned, Total: 800 * ms}, LatencyFailure, true, 800 * ms, true},
		{"abandoned over the threshold", ttfb, Outcome{Err: abandoned, Total: 3 * time.Second}, LatencyFailure, true, 3 * time.Second, true},
		{"abandoned without latency rule", plain, Outcome{Err: ErrHighLatency, Total: 3 * time.Second}, LatencyFailure, false, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ev, m := tt.rules.Classify(&tt.o)
			if c != tt.class || ev != tt.event || m != tt.measured {
				t.Errorf("Classify = %v, event %v, measured %v; want %v, %v, %v", c, ev, m, tt.class, tt.event, tt.measured)
			}
			if c.Retriable() != tt.retriable {
				t.Errorf("%v.Retriable() = %v", c, c.Retriable())
			}
		})
	}
}

func TestClassString(t *testing.T) {
	for c, want := range map[Class]string{
		Success: "success", SlowSuccess: "slow_success", HTTPError: "http_error",
		Timeout: "timeout", LatencyFailure: "high_latency", PassThrough: "pass_through", Class(200): "unknown",
	} {
		if got := c.String(); got != want {
			t.Errorf("Class(%d).String() = %q, want %q", c, got, want)
		}
	}
}

func TestResolve(t *testing.T) {
	full := rulesOf(t, `
default_strategy: same_provider
default_max_attempts: 4
on_status_codes:
  - codes: [429, 503]
    strategy: same_model
    max_attempts: 3
  - codes: [503, "500-504"]
    strategy: different_provider
    max_attempts: 0
  - codes: [400]
    strategy: different_provider
    max_attempts: 1
on_timeout:
  strategy: different_provider
  max_attempts: 5
on_high_latency:
  threshold_ms: 2000
  strategy: same_provider
  max_attempts: 6`)
	bare := rulesOf(t, `
default_strategy: same_model
default_max_attempts: 0`)

	tests := []struct {
		name   string
		r      *Rules
		class  Class
		status int
		action Action
		key    Key
	}{
		{"listed", full, HTTPError, 429, Action{SameModel, 3}, 429},
		{"first matching entry wins", full, HTTPError, 503, Action{SameModel, 3}, 503},
		{"second entry, max_attempts 0 behaves as 1", full, HTTPError, 502, Action{DifferentProvider, 1}, 502},
		{"range ends included", full, HTTPError, 500, Action{DifferentProvider, 1}, 500},
		{"range end", full, HTTPError, 504, Action{DifferentProvider, 1}, 504},
		{"4xx listed", full, HTTPError, 400, Action{DifferentProvider, 1}, 400},
		{"unlisted 5xx: defaults", full, HTTPError, 505, Action{SameProvider, 4}, 505},
		{"unlisted 4xx: defaults", full, HTTPError, 404, Action{SameProvider, 4}, 404},
		{"out of range status: defaults", full, HTTPError, 600, Action{SameProvider, 4}, 600},
		{"timeout: on_timeout", full, Timeout, 0, Action{DifferentProvider, 5}, KeyTimeout},
		{"timeout ignores status", full, Timeout, 429, Action{DifferentProvider, 5}, KeyTimeout},
		{"latency: on_high_latency", full, LatencyFailure, 0, Action{SameProvider, 6}, KeyLatency},
		{"timeout without on_timeout: defaults", bare, Timeout, 0, Action{SameModel, 1}, KeyTimeout},
		{"latency without on_high_latency: defaults", bare, LatencyFailure, 0, Action{SameModel, 1}, KeyLatency},
		{"default max_attempts 0 behaves as 1", bare, HTTPError, 429, Action{SameModel, 1}, 429},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, k := tt.r.Resolve(tt.class, tt.status)
			if a != tt.action || k != tt.key {
				t.Errorf("Resolve(%v, %d) = %+v, %d; want %+v, %d", tt.class, tt.status, a, k, tt.action, tt.key)
			}
		})
	}
	// Failures are counted per status code even within one entry.
	_, k429 := full.Resolve(HTTPError, 429)
	_, k503 := full.Resolve(HTTPError, 503)
	if k429 == k503 || k429 == KeyTimeout || k503 == KeyLatency {
		t.Errorf("keys 429=%d 503=%d are not distinct", k429, k503)
	}
}

// TestResolveManyEntries: the first-entry index must not wrap around with
// more entries than a byte can count.
func TestResolveManyEntries(t *testing.T) {
	var rules []StatusRule
	for i := range 400 {
		s := SameModel
		if i%2 == 1 {
			s = SameProvider
		}
		rules = append(rules, rule(s, i+1, code(100+i)))
	}
	cfg := &Config{ModelProviders: []ModelProvider{
		{Model: "openai/gpt-4o", RetryPolicy: &RetryPolicy{OnStatusCodes: rules}},
		{Model: "openai/gpt-4o-mini"}, {Model: "anthropic/claude-3-5-sonnet"},
	}}
	if _, err := cfg.Finalize(); err != nil {
		t.Fatal(err)
	}
	r := cfg.Compiled().Rules[0]
	for i, e := range rules {
		if a, _ := r.Resolve(HTTPError, 100+i); a != (Action{e.Strategy, i + 1}) {
			t.Fatalf("code %d resolved to %+v, want entry %d", 100+i, a, i)
		}
	}
}

func TestCompiledIndex(t *testing.T) {
	cfg, _ := mustParse(t, `model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [openai/gpt-4o-mini, mistral/mistral-large, openai/gpt-4o-mini, anthropic/claude-3-5-sonnet]
  - model: anthropic/claude-3-5-sonnet
  - model: openai/gpt-4o-mini
  - model: bedrock/eu/claude
  - model: local
`)
	c := cfg.Compiled()
	if c.NumTargets() != 5 || c.NumIDs() != 5+4 {
		t.Fatalf("NumTargets %d NumIDs %d", c.NumTargets(), c.NumIDs())
	}
	wantModels := []string{"gpt-4o", "claude-3-5-sonnet", "gpt-4o-mini", "eu/claude", ""}
	wantProviders := []string{"openai", "anthropic", "openai", "bedrock", "local"}
	for i, target := range c.Targets {
		if got, ok := c.Lookup(target); !ok || got != i {
			t.Errorf("Lookup(%s) = %d %v", target, got, ok)
		}
		if c.Models[i] != wantModels[i] {
			t.Errorf("Models[%d] = %q, want %q", i, c.Models[i], wantModels[i])
		}
		if p := c.Providers[c.ProviderOf[i]]; p != wantProviders[i] || p != ProviderOf(target) {
			t.Errorf("provider of %s = %q, want %q", target, p, wantProviders[i])
		}
		if c.ID(i, ScopeModel) != i || c.IDName(i) != target {
			t.Errorf("model id of %s = %d (%s)", target, c.ID(i, ScopeModel), c.IDName(i))
		}
		pid := c.ID(i, ScopeProvider)
		if pid != c.ProviderID(i) || pid < c.NumTargets() || c.IDName(pid) != wantProviders[i] {
			t.Errorf("provider id of %s = %d (%s)", target, pid, c.IDName(pid))
		}
	}
	if _, ok := c.Lookup("mistral/mistral-large"); ok {
		t.Error("Lookup found an unconfigured target")
	}
	if !c.SameProvider(0, 2) || c.SameProvider(0, 1) {
		t.Error("SameProvider wrong")
	}
	// Unconfigured fallbacks are skipped and duplicates dropped, order kept.
	if got := c.Rules[0].Fallbacks; len(got) != 2 || got[0] != 2 || got[1] != 1 {
		t.Errorf("Fallbacks = %v, want [2 1]", got)
	}
}

func TestProviderOf(t *testing.T) {
	for in, want := range map[string]string{
		"openai/gpt-4o": "openai", "a/b/c": "a", "local": "local", "/x": "", "": "",
	} {
		if got := ProviderOf(in); got != want {
			t.Errorf("ProviderOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCodeSet(t *testing.T) {
	var s CodeSet
	for _, c := range []int{99, 100, 429, 599, 600, -1, 1 << 20} {
		s.Add(c)
	}
	if got := s.Codes(); len(got) != 3 || got[0] != 100 || got[1] != 429 || got[2] != 599 {
		t.Errorf("Codes() = %v, want [100 429 599]", got)
	}
	for c, want := range map[int]bool{99: false, 100: true, 101: false, 429: true, 599: true, 600: false, -5: false} {
		if s.Has(c) != want {
			t.Errorf("Has(%d) = %v", c, !want)
		}
	}
}

// TestExpandCodesProperty checks range expansion against a naive model:
// inclusive at both ends, ordered, duplicates merged, invalid specs skipped.
func TestExpandCodesProperty(t *testing.T) {
	r := newRand(7)
	for range 2000 {
		var specs []CodeSpec
		naive := map[int]bool{}
		for range 1 + r.IntN(4) {
			lo := 90 + r.IntN(520)
			switch r.IntN(3) {
			case 0:
				specs = append(specs, code(lo))
				if lo >= 100 && lo <= 599 {
					naive[lo] = true
				}
			default:
				hi := lo + r.IntN(40) - 5
				specs = append(specs, codeRange(fmt.Sprintf("%d-%d", lo, hi)))
				if lo >= 100 && hi <= 599 && lo <= hi {
					for c := lo; c <= hi; c++ {
						naive[c] = true
					}
				}
			}
		}
		set := ExpandCodes(specs)
		got := set.Codes()
		for i := 1; i < len(got); i++ {
			if got[i] <= got[i-1] {
				t.Fatalf("%v: Codes() not strictly increasing: %v", specs, got)
			}
		}
		if len(got) != len(naive) {
			t.Fatalf("%v: %d codes, naive %d", specs, len(got), len(naive))
		}
		for _, c := range got {
			if !naive[c] {
				t.Fatalf("%v: %d expanded but not in the naive set", specs, c)
			}
		}
	}
}
