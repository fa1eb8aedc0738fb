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
	// Twenty significant integer digits are at least 1e19 units, more than
	// math.MaxInt64 nanoseconds whatever the unit, so the value saturates
	// without being parsed. Leaving it to strconv is not enough: from about
	// 309 digits on ParseFloat reports the value out of range (as +Inf,
	// with an allocated error), which is not a malformed value but a huge
	// one.
	if intDigits(v) >= 20 {
		return math.MaxInt64, true
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

// intDigits counts the significant digits (leading zeros not counted) of
// the integer part of a string isNumeric admits.
func intDigits(v string) int {
	n := 0
	for i := 0; i < len(v) && v[i] != '.'; i++ {
		if n > 0 || v[i] != '0' {
			n++
		}
	}
	return n
}

// parseGoDuration parses a non-negative Go duration. Like parseSeconds it
// saturates where time.ParseDuration would report an overflow, which it
// does with the same error as for a malformed value.
func parseGoDuration(v string) (time.Duration, bool) {
	ns, wellFormed := goDurationNanos(v)
	if wellFormed && ns >= math.MaxInt64 {
		return math.MaxInt64, true
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if wellFormed {
			// Over the maximum by less than the estimate's rounding: for
			// a well-formed value, overflow is ParseDuration's only error.
			return math.MaxInt64, true
		}
		return 0, false
	}
	if d < 0 {
		return 0, false
	}
	return d, true
}

// goDurationNanos reports whether v is a Go duration as time.ParseDuration
// reads it, without a minus sign, and estimates its length in nanoseconds
// as a float, which reaches math.MaxInt64 instead of overflowing. It does
// not allocate.
func goDurationNanos(v string) (float64, bool) {
	if v != "" && v[0] == '+' {
		v = v[1:]
	}
	if v == "0" {
		return 0, true
	}
	if v == "" {
		return 0, false
	}
	total := 0.0
	for v != "" {
		i := 0
		for i < len(v) && (v[i] >= '0' && v[i] <= '9' || v[i] == '.') {
			i++
		}
		num := v[:i]
		j := i
		for j < len(v) && !(v[j] >= '0' && v[j] <= '9' || v[j] == '.') {
			j++
		}
		unit := unitNanos(v[i:j])
		if num == "" || !isNumeric(num) || unit == 0 {
			return 0, false
		}
		v = v[j:]
		if intDigits(num) >= 20 {
			total = math.MaxInt64
			continue
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return 0, false
		}
		total += f * unit
	}
	return total, true
}

// unitNanos is the length of a time.ParseDuration unit in nanoseconds, 0
// for an unknown unit.
func unitNanos(u string) float64 {
	switch u {
	case "ns":
		return 1
	case "us", "\u00b5s", "\u03bcs":
		return 1e3
	case "ms":
		return 1e6
	case "s":
		return 1e9
	case "m":
		return 60e9
	case "h":
		return 3600e9
	}
	return 0
}

func max0(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d
}
