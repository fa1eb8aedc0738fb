package policy

import (
	"math"
	"net/http"
	"strconv"
	"time"
)

// Hint is the retry hint read from a response's headers (docs/configuration.md#retry-after-and-rate-limit-headers).
type Hint struct {
	// Wait is the hinted wait, capped; meaningful when Found.
	Wait time.Duration
	// Found reports that some header gave a valid value.
	Found bool
	// Capped reports that the largest value exceeded the cap.
	Capped bool
	// Uncapped is the largest value before the cap.
	Uncapped time.Duration
	// Malformed reports that some hint header was present but unreadable
	// (it was ignored).
	Malformed bool
}

// ParseRetryAfter reads the retry hint of a response with the given status
// (docs/configuration.md#retry-after-and-rate-limit-headers): on 4xx and 5xx, Retry-After (delta-seconds, fractions
// accepted, or an HTTP-date), retry-after-ms and x-ms-retry-after-ms; the
// largest valid value wins. On a 429 without any of them, the reset headers
// of an exhausted rate-limit dimension (x-ratelimit-reset-requests and
// -tokens as Go durations or bare seconds, anthropic-ratelimit-*-reset as
// RFC 3339 times) supply it; a dimension whose remaining header says it is
// not exhausted is ignored, because its reset time is when the bucket is
// full again, not when one request fits. The value is capped at limit (0: no cap).
//
// Header keys are looked up case-insensitively. It does not allocate for
// well-formed values.
func ParseRetryAfter(status int, h http.Header, now time.Time, limit time.Duration) Hint {
	var hint Hint
	if status < 400 || status > 599 || len(h) == 0 {
		return hint
	}
	best := time.Duration(-1)
	take := func(d time.Duration, ok bool) {
		if !ok {
			hint.Malformed = true
			return
		}
		if d > best {
			best = d
		}
	}
	// The keys below are in canonical form, so indexing the map is what
	// h.Get would do, without canonicalizing the key again.
	for _, v := range h["Retry-After"] {
		d, ok := parseRetryAfterValue(v, now)
		take(d, ok)
	}
	for _, k := range [...]string{"Retry-After-Ms", "X-Ms-Retry-After-Ms"} {
		if v := first(h[k]); v != "" {
			d, ok := parseSeconds(v, time.Millisecond)
			take(d, ok)
		}
	}
	if best < 0 && status == http.StatusTooManyRequests {
		for _, dim := range [...]struct{ reset, remaining string }{
			{"X-Ratelimit-Reset-Requests", "X-Ratelimit-Remaining-Requests"},
			{"X-Ratelimit-Reset-Tokens", "X-Ratelimit-Remaining-Tokens"},
		} {
			if v := first(h[dim.reset]); v != "" && exhausted(first(h[dim.remaining])) {
				d, ok := parseSeconds(v, time.Second)
				if !ok {
					d, ok = parseGoDuration(v)
				}
				take(d, ok)
			}
		}
		for _, dim := range [...]struct{ reset, remaining string }{
			{"Anthropic-Ratelimit-Requests-Reset", "Anthropic-Ratelimit-Requests-Remaining"},
			{"Anthropic-Ratelimit-Tokens-Reset", "Anthropic-Ratelimit-Tokens-Remaining"},
			{"Anthropic-Ratelimit-Input-Tokens-Reset", "Anthropic-Ratelimit-Input-Tokens-Remaining"},
			{"Anthropic-Ratelimit-Output-Tokens-Reset", "Anthropic-Ratelimit-Output-Tokens-Remaining"},
		} {
			if v := first(h[dim.reset]); v != "" && exhausted(first(h[dim.remaining])) {
				t, err := time.Parse(time.RFC3339, v)
				take(max0(t.Sub(now)), err == nil)
			}
		}
	}
	if best < 0 {
		return hint
	}
	hint.Found, hint.Uncapped, hint.Wait = true, best, best
	if limit > 0 && best > limit {
		hint.Wait, hint.Capped = limit, true
	}
	return hint
}

// first returns the first value of a header, or "" when it is absent.
func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// exhausted reports whether a remaining header says the dimension is used
// up; an absent header counts as exhausted, so a lone reset header on a 429
// is still used.
func exhausted(remaining string) bool {
	return remaining == "" || remaining == "0"
}

func parseRetryAfterValue(v string, now time.Time) (time.Duration, bool) {
	if d, ok := parseSeconds(v, time.Second); ok {
		return d, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max0(t.Sub(now)), true
}

// parseSeconds parses a non-negative decimal number of units. Very large
// values saturate instead of overflowing; the caller caps them anyway.
func parseSeconds(v string, unit time.Duration) (time.Duration, bool) {
	if v == "" || !isNumeric(v) {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	if f*float64(unit) >= math.MaxInt64 {
		return math.MaxInt64, true
	}
	return time.Duration(f * float64(unit)), true
}

// isNumeric admits digits with at most one dot, so strconv sees only what
// it parses without allocating an error ("inf", "1e9", "0x10" are refused).
func isNumeric(v string) bool {
	dot := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c >= '0' && c <= '9':
		case c == '.' && !dot:
			dot = true
		default:
			return false
		}
	}
	return v != "."
}

func parseGoDuration(v string) (time.Duration, bool) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, false
	}
	return d, true
}

func max0(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d
}
