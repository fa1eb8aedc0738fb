package bench

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// Every sample parses, and the default is among them.
func TestSampleScenariosParse(t *testing.T) {
	names := SampleScenarios()
	want := []string{"all-blocked.yaml", "brownout.yaml", "default.yaml", "flapping.yaml", "primary-outage.yaml", "rate-limited.yaml", "retry-storm.yaml"}
	for _, w := range want {
		found := false
		for _, n := range names {
			found = found || n == w
		}
		if !found {
			t.Errorf("sample %s missing from %v", w, names)
		}
	}
	for _, n := range names {
		sc := mustSample(t, n)
		if len(sc.Warnings) > 0 {
			t.Errorf("%s: configuration warnings %v", n, sc.Warnings)
		}
		if sc.Description == "" {
			t.Errorf("%s: no description", n)
		}
	}
}

func TestParseScenarioDefaults(t *testing.T) {
	sc := mustScenario(t, "testdata/my-scenario.yaml", doc(
		"config:",
		"  model_providers:",
		"    - model: openai/gpt-4o",
		"    - model: anthropic/claude-3-5-sonnet",
		"workload: {model: openai/gpt-4o, requests: 10, concurrency: 2}",
		"upstreams:",
		"  openai/gpt-4o:",
		"    latency: {ttfb: 200ms}",
		"    phases:",
		"      - {at: 5s, status: 429, retry_after: 3, share: 0.5, latency: {ttfb: 20ms}}",
		"      - {at: 10s, headers: {x-ratelimit-remaining-requests: \"0\"}, status: 429}",
	))
	if sc.Name != "my-scenario" || sc.Seed != 1 || sc.Workload.Timeout != DefaultTimeout || sc.Workload.Rate != 0 || sc.Workload.Concurrency != 2 {
		t.Errorf("defaults: %+v", sc)
	}
	gpt, claude := sc.Upstreams[0], sc.Upstreams[1]
	if claude.Target != "anthropic/claude-3-5-sonnet" || claude.Latency != DefaultLatency || len(claude.Phases) != 0 {
		t.Errorf("unmentioned target: %+v", claude)
	}
	// ttfb alone keeps the default body time.
	if want := (Latency{TTFB: 200 * time.Millisecond, Total: 600 * time.Millisecond}); gpt.Latency != want {
		t.Errorf("latency %+v, want %+v", gpt.Latency, want)
	}
	p := gpt.Phases[0]
	if p.At != 5*time.Second || p.Status != 429 || p.RetryAfter != "3" || p.Header.Get("Retry-After") != "3" || p.Share != 0.5 {
		t.Errorf("phase 0: %+v", p)
	}
	if want := (Latency{TTFB: 20 * time.Millisecond, Total: 420 * time.Millisecond}); p.Latency != want {
		t.Errorf("phase latency %+v, want %+v", p.Latency, want)
	}
	if q := gpt.Phases[1]; q.Share != 1 || q.Header.Get("X-Ratelimit-Remaining-Requests") != "0" || q.Latency != gpt.Latency {
		t.Errorf("phase 1: %+v", q)
	}
	if i := gpt.phase(4 * time.Second); i != -1 {
		t.Errorf("before the first phase: %d", i)
	}
	if i := gpt.phase(7 * time.Second); i != 0 {
		t.Errorf("at 7s: phase %d", i)
	}
}

// Bad scenarios: every problem is reported with its path and line, and
// nothing is returned.
func TestParseScenarioErrors(t *testing.T) {
	base := func(extra ...string) []byte {
		return doc(append([]string{
			"config:", // 1
			"  model_providers:",
			"    - model: openai/gpt-4o",
			"      retry_policy: {on_status_codes: [{codes: [429], strategy: different_provider, max_attempts: 2}]}",
			"    - model: anthropic/claude-3-5-sonnet", // 5
		}, extra...)...)
	}
	tests := []struct {
		name string
		data []byte
		want []string // each must appear in the error, in this form: "line N: path: message"
	}{
		{"unknown top-level key", base(
			"workload: {model: openai/gpt-4o, requests: 10, rate: 5}",
			"upstream: {}", // 7
		), []string{`line 7: upstream: unknown key "upstream" (did you mean "upstreams"?)`}},
		{"unknown nested key", base(
			"workload: {model: openai/gpt-4o, requests: 10, rate: 5}",
			"upstreams:",
			"  openai/gpt-4o:",
			"    phases:",
			"      - {at: 0s, stauts: 500}", // 10
		), []string{`line 10: upstreams["openai/gpt-4o"].phases[0].stauts: unknown key "stauts" (did you mean "status"?)`}},
		{"type error", base(
			"workload:",
			"  model: openai/gpt-4o",
			"  requests: many", // 8
			"  rate: 5",
		), []string{"line 8: workload.requests: cannot unmarshal"}},
		{"bad duration", base(
			"workload: {model: openai/gpt-4o, requests: 10, rate: 5, timeout: soon}", // 6
		), []string{`line 6: workload.timeout: invalid duration "soon"`}},
		{"configuration error from ParseNode", doc(
			"name: x",
			"config:",
			"  model_providers:",
			"    - model: openai/gpt-4o",
			"      retry_policy:",
			"        backoff: {base_ms: 100}", // 6
			"workload: {model: openai/gpt-4o, requests: 10, rate: 5}",
		), []string{"line 6: config.model_providers[0].retry_policy.backoff.apply_to: (model openai/gpt-4o)"}},
		{"unknown key in the configuration", doc(
			"config:",
			"  model_providers:",
			"    - model: openai/gpt-4o",
			"      retry_polcy: {}", // 4
			"workload: {model: openai/gpt-4o, requests: 10, rate: 5}",
		), []string{`line 4: config.model_providers[0].retry_polcy: (model openai/gpt-4o) unknown key "retry_polcy"`}},
		{"no config", doc(
			"workload: {model: openai/gpt-4o, requests: 10, rate: 5}",
		), []string{"config: required"}},
		{"workload problems", base(
			"workload:",
			"  model: openai/gpt-5", // 7
			"  requests: 0",         // 8
			"  rate: 5",             // 9
			"  concurrency: 3",
		), []string{
			`line 7: workload.model: "openai/gpt-5" is not a configured model`,
			"line 8: workload.requests: must be between 1 and 1000000000, not 0",
			"line 9: workload.rate: give concurrency (closed loop) or rate (open loop), not both",
		}},
		{"neither rate nor concurrency", base(
			"workload: {model: openai/gpt-4o, requests: 10}", // 6
		), []string{"line 6: workload: give concurrency"}},
		{"no workload", base(), []string{"workload: required"}},
		{"upstream problems", base(
			"workload: {model: openai/gpt-4o, requests: 10, rate: 5}",
			"upstreams:",
			"  mistral/large: {}", // 8
			"  openai/gpt-4o:",
			"    latency: {ttfb: 2s, total: 1s, spread: -1}", // 10
			"    phases:",
			"      - {at: 10s, status: 700}",                     // 12
			"      - {at: 5s, hang: true, status: 200}",          // 13
			"      - {at: 20s, share: 1.5, reset: true}",         // 14
			"      - {at: 30s, status: 200, retry_after: \"5\"}", // 15
			"      - {at: 40s, status: 429, retry_after: soon}",  // 16
			"      - {status: 500}",                              // 17
		), []string{
			`line 8: upstreams["mistral/large"]: "mistral/large" is not a configured model`,
			`line 10: upstreams["openai/gpt-4o"].latency.total: the whole answer (1s) cannot take less than its first byte (ttfb 2s)`,
			`line 10: upstreams["openai/gpt-4o"].latency.spread: must be between 0 and 3`,
			`line 12: upstreams["openai/gpt-4o"].phases[0].status: must be an HTTP status 100-599, not 700`,
			`line 13: upstreams["openai/gpt-4o"].phases[1].at: must be later than the previous phase's (10s)`,
			`line 13: upstreams["openai/gpt-4o"].phases[1].status: a phase that hangs or resets the connection answers no status`,
			`line 14: upstreams["openai/gpt-4o"].phases[2].share: must be a fraction of attempts in (0, 1], not 1.5`,
			`line 15: upstreams["openai/gpt-4o"].phases[3].retry_after: Retry-After is read only on a 4xx or 5xx answer`,
			`line 16: upstreams["openai/gpt-4o"].phases[4].retry_after: "soon" is not a Retry-After value`,
			`line 17: upstreams["openai/gpt-4o"].phases[5].at: required`,
		}},
		{"not a mapping", []byte("- a\n- b\n"), []string{"line 1: a scenario must be a mapping"}},
		{"two documents", []byte("name: a\n---\nname: b\n"), []string{"line 2: the file holds more than one YAML document"}},
		{"empty", []byte(""), []string{"the scenario is empty"}},
		{"syntax", []byte("name: [a\n"), []string{"YAML syntax"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, err := ParseScenario("bad.yaml", tt.data)
			if sc != nil || err == nil {
				t.Fatalf("ParseScenario = %v, %v; want an error", sc, err)
			}
			var se *ScenarioError
			if !errors.As(err, &se) || se.File != "bad.yaml" {
				t.Fatalf("error %T %v, want a *ScenarioError for bad.yaml", err, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "bad.yaml: invalid scenario (") {
				t.Errorf("message %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
		})
	}
}

func TestParseScenarioShapeErrors(t *testing.T) {
	_, err := ParseScenario("bad.yaml", doc(
		"config:",
		"  model_providers: [{model: openai/gpt-4o}]",
		"workload: 5",
		"upstreams: [a]",
	))
	msg := err.Error()
	for _, w := range []string{
		`line 3: workload: expected a mapping, found the value "5"`,
		`line 4: upstreams: expected a mapping, found a list`,
		"(2 problems)",
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("error lacks %q:\n%s", w, msg)
		}
	}
}

// The configuration is finalized once, when the scenario is parsed: every
// run's copy shares its compiled form and the access keys expanded then,
// and has model_providers entries of its own (the HTTP mode rewrites
// base_url).
func TestNewConfigFinalizedOnce(t *testing.T) {
	t.Setenv("BENCH_TEST_KEY", "sk-at-parse")
	sc := mustScenario(t, "once.yaml", doc(
		"config:",
		"  model_providers:",
		"    - model: openai/gpt-4o",
		"      access_key: $BENCH_TEST_KEY",
		"    - model: anthropic/claude-3-5-sonnet",
		"workload: {model: openai/gpt-4o, requests: 10, concurrency: 2}",
	))
	t.Setenv("BENCH_TEST_KEY", "sk-changed-later")
	a, err := sc.NewConfig()
	if err != nil {
		t.Fatal(err)
	}
	b, err := sc.NewConfig()
	if err != nil {
		t.Fatal(err)
	}
	if a.Compiled() == nil || a.Compiled() != b.Compiled() {
		t.Errorf("the runs' configurations were compiled separately")
	}
	if k := a.ModelProviders[0].AccessKey; k != "sk-at-parse" {
		t.Errorf("access_key = %q: expanded again after parsing", k)
	}
	a.ModelProviders[0].BaseURL = "http://127.0.0.1:1/v1"
	if b.ModelProviders[0].BaseURL != "" || sc.cfg.ModelProviders[0].BaseURL != "" {
		t.Error("a run's base_url reached another run's configuration")
	}
	if _, err := (&Scenario{}).NewConfig(); err == nil {
		t.Error("NewConfig of a Scenario not parsed: no error")
	}
}

// TestParseScenarioPathsAndLines: a scenario's decoding problems name the
// exact item, also inside flow collections, and an upstream whose name
// needs quoting keeps its line (the path the checks built used to quote
// the name differently from the decoder, so its line was lost).
func TestParseScenarioPathsAndLines(t *testing.T) {
	_, err := ParseScenario("bad.yaml", doc(
		"config:",
		"  model_providers: [{model: openai/gpt-4o}]",
		"workload: {model: openai/gpt-4o, requests: 10, rate: 5}",
		"upstreams:",
		"  openai/gpt-4o:", // 5
		"    phases: [{at: 1s}, {at: soon}, 5, {status: 2.5}]",
	))
	msg := err.Error()
	for _, w := range []string{
		`line 6: upstreams["openai/gpt-4o"].phases[1].at: invalid duration "soon"`,
		`line 6: upstreams["openai/gpt-4o"].phases[2]: expected a mapping, found the value "5"`,
		`line 6: upstreams["openai/gpt-4o"].phases[3].status: 2.5 is not a whole number`,
		"(3 problems)",
	} {
		if !strings.Contains(msg, w) {
			t.Errorf("error lacks %q:\n%s", w, msg)
		}
	}

	_, err = ParseScenario("bad.yaml", doc(
		"config:",
		"  model_providers: [{model: openai/gpt-4o}]",
		"workload: {model: openai/gpt-4o, requests: 10, rate: 5}",
		"upstreams:",
		`  'say "hi"': {}`, // 5
	))
	if w := `line 5: upstreams["say \"hi\""]: "say \"hi\"" is not a configured model`; err == nil || !strings.Contains(err.Error(), w) {
		t.Errorf("error lacks %q:\n%v", w, err)
	}
}
