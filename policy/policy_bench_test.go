package policy

import (
	"math/rand/v2"
	"net/http"
	"testing"
	"time"
)

var (
	sinkClass Class
	sinkBool  bool
	sinkDur   time.Duration
	sinkAct   Action
	sinkKey   Key
	sinkHint  Hint
)

func benchRules(b *testing.B) *Rules {
	b.Helper()
	return rulesOf(b, `
fallback_models: [anthropic/claude-3-5-sonnet]
on_status_codes:
  - codes: [429, "500-504"]
    strategy: different_provider
    max_attempts: 3
  - codes: [408, 409]
    strategy: same_model
    max_attempts: 2
on_timeout:
  strategy: different_provider
  max_attempts: 2
on_high_latency:
  threshold_ms: 5000
  strategy: different_provider
  max_attempts: 2`)
}

func BenchmarkClassify(b *testing.B) {
	r := benchRules(b)
	outcomes := []struct {
		name string
		o    Outcome
	}{
		{"success", Outcome{Status: 200, TTFB: 800 * ms, Total: 2 * time.Second}},
		{"slow_success", Outcome{Status: 200, TTFB: 6 * time.Second}},
		{"http_error", Outcome{Status: 429, TTFB: 80 * ms}},
		{"timeout", Outcome{Err: errTimeoutBench, Total: 30 * time.Second}},
	}
	for _, oc := range outcomes {
		b.Run(oc.name, func(b *testing.B) {
			b.ReportAllocs()
			o := oc.o
			for b.Loop() {
				sinkClass, sinkBool, sinkDur = r.Classify(&o)
			}
		})
	}
}

var errTimeoutBench = &timeoutError{}

type timeoutError struct{}

func (*timeoutError) Error() string { return "i/o timeout" }

func BenchmarkResolve(b *testing.B) {
	r := benchRules(b)
	cases := []struct {
		name   string
		class  Class
		status int
	}{
		{"listed", HTTPError, 503},
		{"default", HTTPError, 400},
		{"timeout", Timeout, 0},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkAct, sinkKey = r.Resolve(c.class, c.status)
			}
		})
	}
}

func BenchmarkBackoffDelay(b *testing.B) {
	for _, j := range []Jitter{JitterNone, JitterEqual, JitterFull, JitterDecorrelated} {
		b.Run(string(j), func(b *testing.B) {
			rule := &BackoffRule{Gate: BackoffGlobal, Base: 100 * ms, Max: 5000 * ms, Jitter: j}
			src := rand.NewPCG(1, 2) // what an engine would hold: a Source, no Rand wrapper
			b.ReportAllocs()
			var prev time.Duration
			attempt := 0
			for b.Loop() {
				attempt = attempt%8 + 1
				prev = rule.Delay(attempt, prev, src)
			}
			sinkDur = prev
		})
	}
}

func BenchmarkParseRetryAfter(b *testing.B) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		status int
		h      http.Header
	}{
		{"delta_seconds", 429, hdr("Retry-After", "17")},
		{"http_date", 503, hdr("Retry-After", "Sun, 01 Mar 2026 12:01:30 GMT")},
		{"ms_header", 429, hdr("Retry-After-Ms", "6000", "Retry-After", "6")},
		{"reset_header", 429, hdr(
			"X-Ratelimit-Remaining-Requests", "4987", "X-Ratelimit-Reset-Requests", "12ms",
			"X-Ratelimit-Remaining-Tokens", "0", "X-Ratelimit-Reset-Tokens", "1.146s")},
		{"anthropic_reset", 429, hdr(
			"Anthropic-Ratelimit-Input-Tokens-Remaining", "0", "Anthropic-Ratelimit-Input-Tokens-Reset", "2026-03-01T12:00:17Z")},
		{"no_hint", 500, hdr("Content-Type", "application/json", "X-Request-Id", "req_1")},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if h := ParseRetryAfter(c.status, c.h, now, cap300); !h.Found && c.name != "no_hint" {
				b.Fatalf("no hint: %+v", h)
			}
			b.ReportAllocs()
			for b.Loop() {
				sinkHint = ParseRetryAfter(c.status, c.h, now, cap300)
			}
		})
	}
}
