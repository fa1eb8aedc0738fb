package policy

import (
	"bytes"
	"errors"
	"io/fs"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// validFiles lists every configuration in testdata that must load.
func validFiles(t testing.TB) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"testdata/patterns/*.yaml", "testdata/valid/*.yaml"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 18 {
		t.Fatalf("only %d testdata configurations", len(files))
	}
	return files
}

// roundTrip marshals a parsed configuration back to YAML, parses that
// again, and checks that nothing changed: the configuration (compared
// without its compiled form), the compiled form, and the bytes of a second
// marshal.
func roundTrip(t testing.TB, cfg *Config) {
	t.Helper()
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	again, _, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parse of the marshaled configuration: %v\n%s", err, out)
	}
	if !reflect.DeepEqual(cfg.Compiled(), again.Compiled()) {
		t.Errorf("compiled forms differ after a round trip:\n%s", out)
	}
	out2, err := yaml.Marshal(again)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	if !bytes.Equal(out, out2) {
		t.Errorf("marshal is not a fixed point:\n%s\n---\n%s", out, out2)
	}
	a, b := *cfg, *again
	a.compiled, b.compiled = nil, nil
	a.warnings, b.warnings = nil, nil
	if !reflect.DeepEqual(normalise(a), normalise(b)) {
		t.Errorf("configuration differs after a round trip:\n%s\n---\n%s", yamlOf(a), yamlOf(b))
	}
}

// normalise maps empty lists to nil: YAML has no way to tell an omitted
// empty list from an absent one, and neither has the engine.
func normalise(c Config) Config {
	mps := make([]ModelProvider, len(c.ModelProviders))
	copy(mps, c.ModelProviders)
	for i := range mps {
		if p := mps[i].RetryPolicy; p != nil {
			cp := *p
			if len(cp.FallbackModels) == 0 {
				cp.FallbackModels = nil
			}
			if len(cp.OnStatusCodes) == 0 {
				cp.OnStatusCodes = nil
			}
			mps[i].RetryPolicy = &cp
		}
	}
	c.ModelProviders = mps
	return c
}

func TestRoundTripTestdata(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-openai-test")
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-test")
	for _, f := range validFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, _, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, cfg)
		})
	}
}

// TestRoundTripEmptyLists: an explicit empty list survives as "absent".
func TestRoundTripEmptyLists(t *testing.T) {
	cfg, _ := mustParse(t, withPolicy("fallback_models: []\non_status_codes: []"))
	roundTrip(t, cfg)
}

func TestEveryKey(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-openai-test")
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-test")
	cfg, warns, err := Load("testdata/valid/every-key.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	c := cfg.Compiled()
	r := c.Rules[0]
	want := LatencyRule{
		Threshold: 8 * time.Second, Measure: MeasureTotal, MinTriggers: 3, Window: 2 * time.Minute,
		Block: 10 * time.Minute, Scope: ScopeProvider, ApplyTo: ApplyRequest, Action: Action{DifferentProvider, 2},
	}
	if r.Latency == nil || *r.Latency != want {
		t.Errorf("latency rule %+v, want %+v", r.Latency, want)
	}
	if want := (BackoffRule{BackoffSameProvider, 250 * ms, 8 * time.Second, JitterDecorrelated}); *r.Backoff != want {
		t.Errorf("backoff %+v", *r.Backoff)
	}
	if want := (RetryAfterRule{ScopeProvider, ApplyRequest, time.Minute}); r.RetryAfter != want {
		t.Errorf("retry-after %+v", r.RetryAfter)
	}
	if r.MaxRetryDuration != 45*time.Second || r.SameModelRetries != 1 || r.Default != (Action{SameProvider, 3}) || r.Timeout != (Action{DifferentProvider, 2}) {
		t.Errorf("rules %+v", r)
	}
	mp := cfg.ModelProviders
	if mp[0].AccessKey != "sk-openai-test" || mp[2].AccessKey != "sk-ant-test" || !mp[1].PassthroughAuth || mp[2].ProviderInterface != "anthropic" {
		t.Errorf("providers %s", yamlOf(mp))
	}
	if mp[0].Timeouts.Attempt.D() != 2*time.Minute || mp[2].Timeouts.Headers.D() != 1500*ms || mp[2].Timeouts.Connect != nil {
		t.Errorf("provider timeouts %s %s", yamlOf(mp[0].Timeouts), yamlOf(mp[2].Timeouts))
	}
	e := cfg.Engine
	if *e.MaxRetryingRequests != 200 || *e.RetryBudget.Percent != 12.5 || *e.RetryBudget.MinPerSecond != 3 ||
		e.RetryBudget.Window.D() != 30*time.Second || e.Timeouts.Headers.D() != time.Minute || e.Timeouts.Attempt.D() != 5*time.Minute {
		t.Errorf("engine %s", yamlOf(e))
	}
	if want := []*EjectionRule{
		{Consecutive: 3, Cooldown: 10 * time.Second, MaxCooldown: time.Minute, Scope: ScopeProvider},
		nil,
		{Consecutive: 2, Cooldown: 2 * time.Second, MaxCooldown: 20 * time.Second, Scope: ScopeModel},
	}; !reflect.DeepEqual(c.Ejection, want) {
		t.Errorf("ejection rules %s", yamlOf(c.Ejection))
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, _, err := Load(filepath.Join(t.TempDir(), "absent.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v", err)
	}
	var perr *Error
	if errors.As(err, &perr) {
		t.Errorf("a read error is not a configuration problem: %v", err)
	}
}

// TestParseNode: a configuration inside a larger document (a load
// generator scenario) reports lines of the enclosing document and paths
// from the node.
func TestParseNode(t *testing.T) {
	src := `name: failover under 429
steps: 3
config:
  model_providers:
    - model: openai/gpt-4o
      retry_policy:
        max_retry_duration_ms: 0
`
	var doc struct {
		Config yaml.Node `yaml:"config"`
	}
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	_, _, err := ParseNode(&doc.Config)
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("ParseNode: %v", err)
	}
	checkProblems(t, "errors", perr.Problems, []want{{rp + ".max_retry_duration_ms", 7, "greater than 0"}})

	ok := `config:
  model_providers:
    - model: openai/gpt-4o
`
	if err := yaml.Unmarshal([]byte(ok), &doc); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := ParseNode(&doc.Config)
	if err != nil || cfg.Compiled().NumTargets() != 1 {
		t.Fatalf("ParseNode: %v", err)
	}
}

// TestBadItemsHideNothing: a value of the wrong type in a list is reported
// at its own index, and the other items are still decoded and validated
// under their own indices. Decoding used to drop the bad item, which
// shifted the later ones; their problems were then dropped as "about a
// value that failed to decode" or reported under the wrong index.
func TestBadItemsHideNothing(t *testing.T) {
	oc := rp + ".on_status_codes"
	tests := []struct {
		name string
		body string
		want []want
	}{
		{"flow list of codes", `
on_status_codes:
  - codes: [429, [500], 600, "5xx"]
    strategy: same_model
    max_attempts: 2`, []want{
			{oc + "[0].codes[1]", 5, "a status code must be an integer"},
			{oc + "[0].codes[2]", 5, "status code 600 is outside 100-599"},
			{oc + "[0].codes[3]", 5, `range "5xx" is malformed`},
		}},
		{"block list of codes", `
on_status_codes:
  - codes:
      - 0x1AD
      - 600
      - 429
    strategy: same_model
    max_attempts: 2`, []want{
			{oc + "[0].codes[0]", 6, `status code "0x1AD" is not an integer`},
			{oc + "[0].codes[1]", 7, "status code 600 is outside 100-599"},
		}},
		{"flow list of fallbacks", `fallback_models: [[a], "", nope]`, []want{
			{rp + ".fallback_models[0]", 4, "cannot unmarshal !!seq into string"},
			{rp + ".fallback_models[1]", 4, "must not be empty"},
			{rp + ".fallback_models[2]", 4, `fallback "nope" must be a target id`},
		}},
		{"block list of fallbacks", `
fallback_models:
  - [a]
  - ""
  - nope`, []want{
			{rp + ".fallback_models[0]", 5, "cannot unmarshal !!seq into string"},
			{rp + ".fallback_models[1]", 6, "must not be empty"},
			{rp + ".fallback_models[2]", 7, `fallback "nope" must be a target id`},
		}},
		{"entry that is not a mapping", `
on_status_codes:
  - 5
  - codes: [600]
    strategy: nope
    max_attempts: 2`, []want{
			{oc + "[0]", 5, `expected a mapping, found the value "5"`},
			{oc + "[1].codes[0]", 6, "status code 600 is outside 100-599"},
			{oc + "[1].strategy", 7, `unknown strategy "nope"`},
		}},
		{"entry with a bad value", `
on_status_codes:
  - {codes: [429, 99], strategy: same_model, max_attempts: x}
  - codes: 429
    strategy: same_model
    max_attempts: 2
  - codes: [600]
    strategy: nope
    max_attempts: 2`, []want{
			{oc + "[0].codes[1]", 5, "status code 99 is outside 100-599"},
			{oc + "[0].max_attempts", 5, "cannot unmarshal !!str `x` into int"},
			{oc + "[1].codes", 6, `expected a list, found the value "429"`},
			{oc + "[2].codes[0]", 9, "status code 600 is outside 100-599"},
			{oc + "[2].strategy", 10, `unknown strategy "nope"`},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, "errors", parseError(t, withPolicy(tt.body)), tt.want)
		})
	}
}

// TestParseNodeLeavesTheNode: decoding works on a copy; the caller's node
// (a scenario parses its config key again for every run) is unchanged, bad
// values included.
func TestParseNodeLeavesTheNode(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(withPolicy("fallback_models: [[a], nope]\nbackof: {}")), &doc); err != nil {
		t.Fatal(err)
	}
	before, _ := yaml.Marshal(&doc)
	if _, _, err := ParseNode(&doc); err == nil {
		t.Fatal("no error")
	}
	if after, _ := yaml.Marshal(&doc); !bytes.Equal(before, after) {
		t.Errorf("ParseNode modified its node:\n%s\n---\n%s", before, after)
	}
}
