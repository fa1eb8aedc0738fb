package policy

import (
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// The targets the pattern files configure, besides the primary.
const (
	primary = "openai/gpt-4o"
	mini    = "openai/gpt-4o-mini"
	sonnet  = "anthropic/claude-3-5-sonnet"
	opus    = "anthropic/claude-3-opus"
)

func code(c int) CodeSpec         { return CodeSpec{Code: c} }
func codeRange(r string) CodeSpec { return CodeSpec{Range: r} }

func rule(s Strategy, max int, codes ...CodeSpec) StatusRule {
	return StatusRule{Codes: codes, Strategy: s, MaxAttempts: ip(max)}
}

// raDefault is the effective retry_after_handling when the key is absent.
func raDefault() *RetryAfterHandling {
	return &RetryAfterHandling{Scope: ScopeModel, ApplyTo: ApplyGlobal, MaxRetryAfterSeconds: ip(300)}
}

// backoffWarning is the warning of docs/configuration.md#warnings for backoff.apply_to same_model
// under the default strategy different_provider; several reference patterns
// have it by design.
const backoffWarning = rp + ".backoff.apply_to"

// TestPatterns parses the seventeen reference configuration patterns in
// testdata/patterns and checks every field of the primary's retry_policy, defaults included,
// the other entries, the warnings, and the compiled rules.
func TestPatterns(t *testing.T) {
	t.Setenv("OPENAI_API_KEY", "sk-openai-test")
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-test")
	tests := []struct {
		file   string
		policy RetryPolicy
		others []string
		warns  []string // warning paths
		check  func(t *testing.T, c *Compiled, r *Rules)
	}{
		{
			file: "01-multi-provider-failover.yaml",
			policy: RetryPolicy{
				FallbackModels:     []string{sonnet},
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(DifferentProvider, 2, code(429))},
				RetryAfterHandling: raDefault(),
			},
			others: []string{sonnet},
			check: func(t *testing.T, c *Compiled, r *Rules) {
				if got := r.Fallbacks; !slices.Equal(got, []int{1}) {
					t.Errorf("Fallbacks = %v, want [1]", got)
				}
			},
		},
		{
			file: "02-same-provider-downgrade.yaml",
			policy: RetryPolicy{
				FallbackModels:     []string{mini, sonnet},
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(SameProvider, 2, code(429))},
				RetryAfterHandling: raDefault(),
			},
			others: []string{mini, sonnet},
		},
		{
			file: "03-single-model-backoff.yaml",
			policy: RetryPolicy{
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes: []StatusRule{
					rule(SameModel, 3, code(429)),
					rule(SameModel, 3, code(503)),
				},
				Backoff:            &Backoff{ApplyTo: BackoffSameModel, BaseMs: ip(500), MaxMs: ip(5000), Jitter: jp(JitterEqual)},
				RetryAfterHandling: raDefault(),
			},
			others: []string{sonnet},
			warns:  []string{backoffWarning},
			check: func(t *testing.T, c *Compiled, r *Rules) {
				want := BackoffRule{Gate: BackoffSameModel, Base: 500 * time.Millisecond, Max: 5 * time.Second, Jitter: JitterEqual}
				if r.Backoff == nil || *r.Backoff != want {
					t.Errorf("Backoff = %+v, want %+v", r.Backoff, want)
				}
			},
		},
		{
			file: "04-per-status-strategies.yaml",
			policy: RetryPolicy{
				FallbackModels:     []string{mini, sonnet},
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes: []StatusRule{
					rule(SameProvider, 2, code(429)),
					rule(DifferentProvider, 3, code(502)),
					rule(SameModel, 2, code(503)),
					rule(DifferentProvider, 2, code(504)),
				},
				OnTimeout:          &TimeoutRule{Strategy: DifferentProvider, MaxAttempts: ip(2)},
				RetryAfterHandling: raDefault(),
			},
			others: []string{mini, sonnet},
			check: func(t *testing.T, c *Compiled, r *Rules) {
				if want := (Action{DifferentProvider, 2}); r.Timeout != want {
					t.Errorf("Timeout = %+v, want %+v", r.Timeout, want)
				}
			},
		},
		{
			file: "05-timeout-specific.yaml",
			policy: RetryPolicy{
				FallbackModels:     []string{sonnet},
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(SameProvider, 2, code(429))},
				OnTimeout:          &TimeoutRule{Strategy: DifferentProvider, MaxAttempts: ip(3)},
				RetryAfterHandling: raDefault(),
			},
			others: []string{mini, sonnet},
			check: func(t *testing.T, c *Compiled, r *Rules) {
				if a, k := r.Resolve(Timeout, 0); a != (Action{DifferentProvider, 3}) || k != KeyTimeout {
					t.Errorf("Resolve(Timeout) = %+v, %v", a, k)
				}
			},
		},
		{
			file: "06-empty-policy.yaml",
			policy: RetryPolicy{
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				RetryAfterHandling: raDefault(),
			},
			others: []string{sonnet},
			check: func(t *testing.T, c *Compiled, r *Rules) {
				want := Rules{
					Default:           Action{DifferentProvider, 2},
					Timeout:           Action{DifferentProvider, 2},
					RetryAfter:        RetryAfterRule{Scope: ScopeModel, ApplyTo: ApplyGlobal, Max: 300 * time.Second},
					SameModelPatience: DefaultSameModelPatienceMs * time.Millisecond,
					ContinueStreams:   true,
					timeoutSame:       -1,
				}
				if !reflect.DeepEqual(*r, want) {
					t.Errorf("compiled empty policy = %+v, want %+v", *r, want)
				}
			},
		},
		{
			file: "07-backoff-same-model.yaml",
			policy: RetryPolicy{
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(SameModel, 2, code(429))},
				Backoff:            &Backoff{ApplyTo: BackoffSameModel, BaseMs: ip(100), MaxMs: ip(5000), Jitter: jp(JitterEqual)},
				RetryAfterHandling: raDefault(),
			},
			others: []string{sonnet},
			warns:  []string{backoffWarning},
		},
		{
			file: "08-backoff-same-provider.yaml",
			policy: RetryPolicy{
				FallbackModels:     []string{mini, sonnet},
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(SameProvider, 2, code(429))},
				Backoff:            &Backoff{ApplyTo: BackoffSameProvider, BaseMs: ip(200), MaxMs: ip(10000), Jitter: jp(JitterEqual)},
				RetryAfterHandling: raDefault(),
			},
			others: []string{mini, sonnet},
		},
		{
			file: "09-global-backoff.yaml",
			policy: RetryPolicy{
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(DifferentProvider, 2, code(429))},
				Backoff:            &Backoff{ApplyTo: BackoffGlobal, BaseMs: ip(50), MaxMs: ip(2000), Jitter: jp(JitterEqual)},
				RetryAfterHandling: raDefault(),
			},
			others: []string{sonnet},
		},
		{
			file: "10-deterministic-backoff.yaml",
			policy: RetryPolicy{
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(SameModel, 3, code(429))},
				Backoff:            &Backoff{ApplyTo: BackoffSameModel, BaseMs: ip(1000), MaxMs: ip(30000), Jitter: jp(JitterNone)},
				RetryAfterHandling: raDefault(),
			},
			others: []string{sonnet},
			warns:  []string{backoffWarning},
			check: func(t *testing.T, c *Compiled, r *Rules) {
				var got []time.Duration
				for a := 1; a <= 7; a++ {
					got = append(got, r.Backoff.Delay(a, 0, nil)) // no jitter: no randomness used
				}
				want := []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
				if !slices.Equal(got, want) {
					t.Errorf("delays = %v, want %v", got, want)
				}
			},
		},
		{
			file: "11-no-backoff.yaml",
			policy: RetryPolicy{
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(DifferentProvider, 2, code(429))},
				RetryAfterHandling: raDefault(),
			},
			others: []string{sonnet},
			check: func(t *testing.T, c *Compiled, r *Rules) {
				if r.Backoff != nil {
					t.Errorf("Backoff = %+v, want nil", r.Backoff)
				}
			},
		},
		{
			file: "12-model-retry-after.yaml",
			policy: RetryPolicy{
				FallbackModels:     []string{sonnet, opus},
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(DifferentProvider, 2, code(429), code(503))},
				RetryAfterHandling: raDefault(),
			},
			others: []string{sonnet, opus},
			check: func(t *testing.T, c *Compiled, r *Rules) {
				if want := (RetryAfterRule{ScopeModel, ApplyGlobal, 300 * time.Second}); r.RetryAfter != want {
					t.Errorf("RetryAfter = %+v, want %+v", r.RetryAfter, want)
				}
			},
		},
		{
			file: "13-provider-retry-after.yaml",
			policy: RetryPolicy{
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(DifferentProvider, 2, code(429), code(503), code(502))},
				RetryAfterHandling: &RetryAfterHandling{Scope: ScopeProvider, ApplyTo: ApplyGlobal, MaxRetryAfterSeconds: ip(300)},
			},
			others: []string{sonnet},
			check: func(t *testing.T, c *Compiled, r *Rules) {
				if want := (RetryAfterRule{ScopeProvider, ApplyGlobal, 300 * time.Second}); r.RetryAfter != want {
					t.Errorf("RetryAfter = %+v, want %+v", r.RetryAfter, want)
				}
			},
		},
		{
			file: "14-request-retry-after.yaml",
			policy: RetryPolicy{
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(DifferentProvider, 2, code(429), code(503))},
				RetryAfterHandling: &RetryAfterHandling{Scope: ScopeModel, ApplyTo: ApplyRequest, MaxRetryAfterSeconds: ip(300)},
			},
			others: []string{sonnet},
		},
		{
			file: "15-default-retry-after-backoff.yaml",
			policy: RetryPolicy{
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(SameModel, 3, code(429), code(503))},
				Backoff:            &Backoff{ApplyTo: BackoffSameModel, BaseMs: ip(1000), MaxMs: ip(30000), Jitter: jp(JitterEqual)},
				RetryAfterHandling: raDefault(),
			},
			others: []string{sonnet},
			warns:  []string{backoffWarning},
		},
		{
			file: "16-targeted-fallbacks.yaml",
			policy: RetryPolicy{
				FallbackModels:     []string{mini, sonnet, opus},
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes:      []StatusRule{rule(SameProvider, 2, code(429))},
				RetryAfterHandling: raDefault(),
			},
			others: []string{mini, sonnet, opus},
			check: func(t *testing.T, c *Compiled, r *Rules) {
				var got []string
				for _, f := range r.Fallbacks {
					got = append(got, c.Targets[f])
				}
				if want := []string{mini, sonnet, opus}; !slices.Equal(got, want) {
					t.Errorf("compiled fallbacks = %v, want %v (order kept)", got, want)
				}
			},
		},
		{
			file: "17-mixed-codes.yaml",
			policy: RetryPolicy{
				DefaultStrategy:    DifferentProvider,
				DefaultMaxAttempts: ip(2),
				OnStatusCodes: []StatusRule{
					rule(SameProvider, 2, code(429), codeRange("430-450"), code(526)),
					rule(DifferentProvider, 3, codeRange("502-504")),
				},
				RetryAfterHandling: raDefault(),
			},
			others: []string{mini, sonnet},
			check: func(t *testing.T, c *Compiled, r *Rules) {
				a, _ := r.Entry(0)
				codes := a.Codes()
				if len(codes) != 23 || !slices.Contains(codes, 430) || !slices.Contains(codes, 450) || slices.Contains(codes, 451) {
					t.Errorf("entry A codes = %v (%d), want 23 codes 429, 430-450, 526", codes, len(codes))
				}
				want := []int{429}
				for c := 430; c <= 450; c++ {
					want = append(want, c)
				}
				want = append(want, 526)
				if !slices.Equal(codes, want) {
					t.Errorf("entry A codes = %v, want %v", codes, want)
				}
				b, _ := r.Entry(1)
				if got := b.Codes(); !slices.Equal(got, []int{502, 503, 504}) {
					t.Errorf("entry B codes = %v, want [502 503 504]", got)
				}
				for status, want := range map[int]Action{
					429: {SameProvider, 2}, 430: {SameProvider, 2}, 450: {SameProvider, 2}, 526: {SameProvider, 2},
					451: {DifferentProvider, 2}, 501: {DifferentProvider, 2}, 502: {DifferentProvider, 3}, 504: {DifferentProvider, 3}, 505: {DifferentProvider, 2},
				} {
					if got, k := r.Resolve(HTTPError, status); got != want || k != Key(status) {
						t.Errorf("Resolve(%d) = %+v, %v; want %+v, %d", status, got, k, want, status)
					}
				}
			},
		},
	}

	files, err := filepath.Glob("testdata/patterns/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(tests) {
		t.Errorf("testdata/patterns holds %d files, the table %d", len(files), len(tests))
	}
	for i, tt := range tests {
		t.Run(strings.TrimSuffix(tt.file, ".yaml"), func(t *testing.T) {
			if want := filepath.Base(files[min(i, len(files)-1)]); want != tt.file {
				t.Errorf("table entry %d is %s, file %s", i, tt.file, want)
			}
			cfg, warns, err := Load(filepath.Join("testdata/patterns", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			var wpaths []string
			for _, w := range warns {
				wpaths = append(wpaths, w.Path)
			}
			if !slices.Equal(wpaths, tt.warns) {
				t.Errorf("warnings = %v, want paths %v", warns, tt.warns)
			}

			mps := cfg.ModelProviders
			if len(mps) != 1+len(tt.others) {
				t.Fatalf("%d providers, want %d", len(mps), 1+len(tt.others))
			}
			p := mps[0]
			if p.Model != primary || p.AccessKey != "sk-openai-test" || p.ProviderInterface != "openai" || p.PassthroughAuth || p.Timeouts != nil {
				t.Errorf("primary entry = %+v", p)
			}
			if p.RetryPolicy == nil {
				t.Fatal("primary has no retry_policy")
			}
			if !reflect.DeepEqual(*p.RetryPolicy, tt.policy) {
				t.Errorf("retry_policy:\n%s\nwant:\n%s", yamlOf(p.RetryPolicy), yamlOf(tt.policy))
			}
			for j, o := range tt.others {
				mp := mps[j+1]
				wantIface, wantKey := "openai", "sk-openai-test"
				if ProviderOf(o) == "anthropic" {
					wantIface, wantKey = "anthropic", "sk-ant-test"
				}
				if mp.Model != o || mp.RetryPolicy != nil || mp.ProviderInterface != wantIface || mp.AccessKey != wantKey {
					t.Errorf("entry %d = %+v, want model %s, interface %s, no retry_policy", j+1, mp, o, wantIface)
				}
			}

			c := cfg.Compiled()
			if c == nil {
				t.Fatal("Compiled() is nil after a successful Load")
			}
			r := c.Rules[0]
			for j := 1; j < len(c.Rules); j++ {
				if c.Rules[j] != nil {
					t.Errorf("Rules[%d] is not nil for a target without retry_policy", j)
				}
			}
			// Generic agreement between the policy and its compiled rules.
			pol := p.RetryPolicy
			if r.Default != (Action{pol.DefaultStrategy, *pol.DefaultMaxAttempts}) {
				t.Errorf("Default = %+v", r.Default)
			}
			if r.Entries() != len(pol.OnStatusCodes) {
				t.Fatalf("Entries() = %d, want %d", r.Entries(), len(pol.OnStatusCodes))
			}
			for j, e := range pol.OnStatusCodes {
				set, a := r.Entry(j)
				if a != (Action{e.Strategy, *e.MaxAttempts}) {
					t.Errorf("entry %d action = %+v", j, a)
				}
				if set != ExpandCodes(e.Codes) {
					t.Errorf("entry %d codes = %v", j, set.Codes())
				}
			}
			if pol.OnTimeout == nil && r.Timeout != r.Default {
				t.Errorf("without on_timeout, Timeout = %+v, want the default %+v", r.Timeout, r.Default)
			}
			if r.Latency != nil || r.MaxRetryDuration != 0 || r.SameModelRetries != 0 {
				t.Errorf("latency %+v, budget %v, same_model_retries %d: none configured", r.Latency, r.MaxRetryDuration, r.SameModelRetries)
			}
			if tt.check != nil {
				tt.check(t, c, r)
			}
		})
	}
}

// TestPatternInvalidBackoffWithoutApplyTo is the negative pattern, in
// testdata/invalid.
func TestPatternInvalidBackoffWithoutApplyTo(t *testing.T) {
	cfg, _, err := Load("testdata/invalid/backoff-without-apply-to.yaml")
	if err == nil || cfg != nil {
		t.Fatalf("Load accepted a backoff without apply_to")
	}
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("error %T is not *Error", err)
	}
	checkProblems(t, "errors", perr.Problems, []want{
		{path: rp + ".backoff.apply_to", line: 9, msg: "backoff requires apply_to"},
	})
	if p := perr.Problems[0]; p.Model != primary {
		t.Errorf("problem model = %q, want %q", p.Model, primary)
	}
	if msg := err.Error(); !strings.Contains(msg, "line 9: "+rp+".backoff.apply_to: (model openai/gpt-4o) ") {
		t.Errorf("error text does not name the path, model and line:\n%s", msg)
	}
}
