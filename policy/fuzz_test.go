package policy

import (
	"bufio"
	"errors"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// FuzzParse: Parse never panics; what it rejects is an *Error with
// problems; what it accepts marshals back to YAML that parses again to the
// same configuration, compiled form included. (The marshaled bytes need not
// be a fixed point: a percent of -0 comes back as 0.)
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"",
		"model_providers: []",
		"model_providers:\n  - model: a/b\n---\nx: 1\n",
		withPolicy(`on_status_codes: [{codes: [429, "500-504"], strategy: same_model, max_attempts: 0}]`),
		withPolicy("backoff: {apply_to: global, jitter: full}\nretry_after_handling: {scope: provider}"),
		withPolicy("fallback_models: []\non_status_codes: []"),
		"model_providers:\n  - model: a/b\n    access_key: \"$$a$\"\nengine: {retry_budget: {percent: -0.0, window: 1}}\n",
		"model_providers:\n  - &p {model: a/b}\n  - *p\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, err := Parse(data)
		if err != nil {
			var perr *Error
			if !errors.As(err, &perr) || len(perr.Problems) == 0 {
				t.Fatalf("error %T without problems: %v", err, err)
			}
			if cfg != nil {
				t.Fatal("configuration returned with an error")
			}
			return
		}
		if cfg.Compiled() == nil {
			t.Fatal("accepted configuration without a compiled form")
		}
		out, err := yaml.Marshal(cfg)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		again, _, err := Parse(out)
		if err != nil {
			t.Fatalf("accepted configuration does not re-parse: %v\ninput:\n%s\nmarshaled:\n%s", err, data, out)
		}
		if !reflect.DeepEqual(cfg.Compiled(), again.Compiled()) {
			t.Fatalf("compiled forms differ:\n%s", out)
		}
		a, b := *cfg, *again
		a.compiled, b.compiled = nil, nil
		a.warnings, b.warnings = nil, nil
		if !reflect.DeepEqual(normalise(a), normalise(b)) {
			t.Fatalf("configuration differs after a round trip:\n%s", out)
		}
	})
}

// FuzzParseRetryAfter: never panics; the wait is never negative and never
// above the cap; the flags agree with the values; a Retry-After of digits
// alone, however many, is a valid hint.
func FuzzParseRetryAfter(f *testing.F) {
	files, err := filepath.Glob("testdata/retry-after/*.http")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		head, _, _ := strings.Cut(string(b), "\n\n")
		status, block, _ := strings.Cut(head, "\n")
		code := 429
		if strings.Contains(status, " 529") {
			code = 529
		}
		f.Add(code, block, int64(300_000), now.Unix())
	}
	for _, s := range []struct {
		status int
		block  string
	}{
		{429, "retry-after: 1.5"},
		{503, "retry-after: Sun, 01 Mar 2026 12:01:30 GMT"},
		{429, "retry-after: 99999999999999999999999"},
		{429, "retry-after: 1" + strings.Repeat("0", 309)},
		{503, "retry-after: " + strings.Repeat("9", 400) + ".5"},
		{429, "x-ms-retry-after-ms: " + strings.Repeat("9", 310)},
		{429, "x-ratelimit-reset-tokens: " + strings.Repeat("9", 310)},
		{429, "x-ratelimit-reset-requests: 2562048h"},
		{429, "retry-after-ms: 1e400\nx-ms-retry-after-ms: 12"},
		{429, "x-ratelimit-reset-tokens: 2562047h47m16.854775807s"},
		{429, "anthropic-ratelimit-tokens-reset: 9999-12-31T23:59:59Z"},
		{429, "anthropic-ratelimit-tokens-reset: 0001-01-01T00:00:00Z"},
		{200, "retry-after: 5"},
	} {
		f.Add(s.status, s.block, int64(300_000), now.Unix())
		f.Add(s.status, s.block, int64(0), int64(-1<<40))
	}
	f.Fuzz(func(t *testing.T, status int, block string, limitMs int64, nowUnix int64) {
		r := textproto.NewReader(bufio.NewReader(strings.NewReader(block + "\n\n")))
		mh, err := r.ReadMIMEHeader()
		if err != nil && len(mh) == 0 {
			return
		}
		limit := time.Duration(limitMs) * time.Millisecond
		if limitMs < 0 || limitMs > int64(1<<62)/int64(time.Millisecond) {
			limit = 0
		}
		h := ParseRetryAfter(status, http.Header(mh), time.Unix(nowUnix, 0), limit)
		if h.Wait < 0 || h.Uncapped < 0 {
			t.Fatalf("negative wait: %+v", h)
		}
		if limit > 0 && h.Wait > limit {
			t.Fatalf("wait %v above the cap %v", h.Wait, limit)
		}
		if !h.Found && (h.Wait != 0 || h.Capped || h.Uncapped != 0) {
			t.Fatalf("values without a hint: %+v", h)
		}
		if h.Capped != (limit > 0 && h.Uncapped > limit) || (h.Capped && h.Wait != limit) || (!h.Capped && h.Wait != h.Uncapped) {
			t.Fatalf("cap flags disagree: %+v, limit %v", h, limit)
		}
		if (status < 400 || status > 599) && h != (Hint{}) {
			t.Fatalf("hint on status %d: %+v", status, h)
		}
		if ra := mh["Retry-After"]; status >= 400 && status <= 599 && len(mh) == 1 && allDigits(ra) && (!h.Found || h.Malformed) {
			t.Fatalf("Retry-After %q of digits alone is not a valid hint: %+v", ra, h)
		}
	})
}

// allDigits reports whether there are values and each is a non-empty run
// of ASCII digits.
func allDigits(vs []string) bool {
	for _, v := range vs {
		if v == "" || strings.Trim(v, "0123456789") != "" {
			return false
		}
	}
	return len(vs) > 0
}
