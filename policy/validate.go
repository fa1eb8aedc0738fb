package policy

import (
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Defaults of docs/configuration.md#retry_policy. Exported so documentation and callers can name them.
const (
	// DefaultSameModelPatienceMs: a same-model retry waits out a
	// Retry-After of up to 3 s. Rate limits per minute answer with hints
	// of about a second or two ("try again in 1.146s"), and a user who
	// asked for same-model retries prefers that short wait to an answer
	// from another model; a longer hint means the provider is not coming
	// back soon, and failing over at once is cheaper.
	DefaultSameModelPatienceMs = 3000

	DefaultMaxAttempts          = 2
	DefaultBackoffBaseMs        = 100
	DefaultBackoffMaxMs         = 5000
	DefaultMaxRetryAfterSeconds = 300
	DefaultMinTriggers          = 1
	DefaultTriggerWindowSeconds = 60
	DefaultBlockDurationSeconds = 300
	DefaultMaxRetryingRequests  = 1000
	DefaultBudgetPercent        = 20.0
	DefaultBudgetMinPerSecond   = 10.0
	DefaultBudgetWindow         = 10 * time.Second
	DefaultConnectTimeout       = 5 * time.Second
	DefaultHeadersTimeout       = 30 * time.Second
	DefaultFirstTokenTimeout    = 30 * time.Second
	DefaultIdleTimeout          = 30 * time.Second
	DefaultConsecutiveFailures  = 5
	DefaultCooldown             = 5 * time.Second
	DefaultMaxCooldown          = 30 * time.Second
)

// Upper bounds of numeric settings. Each is far beyond what a user means
// (nobody waits a day for one LLM request), and each keeps the arithmetic
// and the memory that follow from a value safe: a count of seconds or
// milliseconds times its unit stays far inside time.Duration (a bare
// 18446744074 seconds would wrap around to 290 ms), and what is sized from a
// setting stays small.
const (
	// MaxSeconds bounds the settings counted in seconds:
	// max_retry_after_seconds, block_duration_seconds and
	// trigger_window_seconds. One day.
	MaxSeconds = 24 * 60 * 60
	// MaxMilliseconds bounds the settings counted in milliseconds:
	// threshold_ms, backoff base_ms and max_ms, max_retry_duration_ms.
	// One day.
	MaxMilliseconds = MaxSeconds * 1000
	// MaxTimeout bounds every key of timeouts, in the engine block and a
	// provider's.
	MaxTimeout = 24 * time.Hour
	// MaxBudgetWindow bounds engine.retry_budget.window: the budget keeps
	// one counter per second of its window.
	MaxBudgetWindow = time.Hour
	// MaxMinTriggers bounds on_high_latency.min_triggers. The health
	// state keeps a ring of that many event times (8 bytes each) for
	// every target and provider, so a million would cost 8 MB per
	// identifier; a thousand slow answers inside one window is already
	// far past any reading of "repeatedly slow".
	MaxMinTriggers = 1000
	// MaxConsecutiveFailures bounds passive_health.consecutive_failures.
	// A target allowed a thousand failures in a row before it is ejected
	// has in effect no passive health; enabled: false says that plainly.
	MaxConsecutiveFailures = 1000
	// MaxEjectionCooldown bounds passive_health.cooldown and
	// max_cooldown. One hour: only one probe per cooldown can find that a
	// target has recovered, so a longer ejection keeps a healthy target
	// out long after any outage it was ejected for.
	MaxEjectionCooldown = time.Hour
)

// longCooldown is the max_cooldown above which a warning says recovery will
// be slow to notice.
const longCooldown = 2 * time.Minute

// Finalize fills defaults, expands environment references in access_key,
// validates the configuration and compiles the form the engine reads. It is
// what Parse does after decoding; call it on a Config built in Go. It runs
// once: on a Config already finalized (by Parse, Load or an earlier call)
// it changes nothing and returns the same warnings, so an access_key whose
// expanded value contains "$" is never expanded twice. On error the
// configuration must not be used.
func (c *Config) Finalize() ([]Warning, error) {
	if c.compiled != nil {
		return c.warnings, nil
	}
	return finalize(c, nil)
}

// Finalized reports whether c has been finalized successfully.
func (c *Config) Finalized() bool { return c.compiled != nil }

// Compiled returns the compiled form built by Finalize, or nil if the
// configuration has not been finalized successfully.
func (c *Config) Compiled() *Compiled { return c.compiled }

type checker struct {
	cfg   *Config
	line  func(string) int
	errs  []Problem
	warns []Warning

	// enginePH is engine.passive_health as written, before defaults:
	// messages about an inherited value say where it came from.
	enginePH PassiveHealth
}

func (k *checker) problem(path, format string, args ...any) Problem {
	p := Problem{Path: path, Model: modelAt(k.cfg, path), Message: fmt.Sprintf(format, args...)}
	if k.line != nil {
		p.Line = k.line(path)
	}
	return p
}

func (k *checker) errorf(path, format string, args ...any) {
	k.errs = append(k.errs, k.problem(path, format, args...))
}

func (k *checker) warnf(path, format string, args ...any) {
	k.warns = append(k.warns, k.problem(path, format, args...))
}

func finalize(c *Config, line func(string) int) ([]Warning, error) {
	k := &checker{cfg: c, line: line}
	c.compiled = nil
	if len(c.ModelProviders) == 0 {
		k.errorf("model_providers", "at least one provider is required")
	}
	seen := map[string]int{}
	for i := range c.ModelProviders {
		mp := &c.ModelProviders[i]
		p := fmt.Sprintf("model_providers[%d]", i)
		switch {
		case mp.Model == "":
			k.errorf(p+".model", "model is required (a target id such as openai/gpt-4o)")
		case seen[mp.Model] > 0:
			k.errorf(p+".model", "model %q is already configured at model_providers[%d]", mp.Model, seen[mp.Model]-1)
		default:
			seen[mp.Model] = i + 1
		}
		if mp.ProviderInterface == "" {
			mp.ProviderInterface = "openai"
		}
		if mp.ProviderInterface != "openai" && mp.ProviderInterface != "anthropic" {
			k.errorf(p+".provider_interface", "unknown provider_interface %q: use openai or anthropic", mp.ProviderInterface)
		}
		switch mp.Continuation {
		case "":
			mp.Continuation = ContinueNone
		case ContinueNone, ContinuePrefill, ContinuePrefix, ContinueFinalMessage:
		default:
			k.errorf(p+".continuation", "unknown continuation %q: use none, prefill, prefix or continue_final_message", mp.Continuation)
		}
		mp.AccessKey = k.expand(p+".access_key", mp.AccessKey, "the key")
		if mp.Timeouts != nil {
			k.timeouts(p+".timeouts", mp.Timeouts)
		}
	}
	for i := range c.ModelProviders {
		if rp := c.ModelProviders[i].RetryPolicy; rp != nil {
			k.retryPolicy(fmt.Sprintf("model_providers[%d].retry_policy", i), &c.ModelProviders[i], rp)
		}
	}
	k.engine()
	k.passiveHealth()
	k.sharedHealth()
	if len(k.errs) > 0 {
		return k.warns, &Error{Problems: k.errs}
	}
	c.compiled, c.warnings = compile(c), k.warns
	return k.warns, nil
}

// setDefault points *p at v when the key was left out (nil).
func setDefault[T any](p **T, v T) {
	if *p == nil {
		*p = &v
	}
}

func (k *checker) strategy(path string, s Strategy, required bool) {
	switch {
	case s == "" && required:
		k.errorf(path, "strategy is required: same_model, same_provider or different_provider")
	case s != "" && !s.valid():
		k.errorf(path, "unknown strategy %q: use same_model, same_provider or different_provider", s)
	}
}

func (k *checker) positive(path string, v *int, required bool) {
	switch {
	case v == nil && required:
		k.errorf(path, "is required and must be greater than 0")
	case v != nil && *v <= 0:
		k.errorf(path, "must be greater than 0, got %d", *v)
	}
}

// seconds checks a positive count of seconds, bounded by MaxSeconds.
func (k *checker) seconds(path string, v *int, required bool) {
	k.positive(path, v, required)
	k.atMost(path, v, MaxSeconds, "seconds (one day)")
}

// millis checks a positive count of milliseconds, bounded by
// MaxMilliseconds.
func (k *checker) millis(path string, v *int, required bool) {
	k.positive(path, v, required)
	k.atMost(path, v, MaxMilliseconds, "ms (one day)")
}

// expand replaces $NAME and ${NAME} in v from the environment (access_key,
// and shared_health's username and password), warning at path about a
// variable that is not set; subject names the value in the warning.
func (k *checker) expand(path, v, subject string) string {
	if !strings.Contains(v, "$") {
		return v
	}
	var missing []string
	out := os.Expand(v, func(name string) string {
		x, ok := os.LookupEnv(name)
		if !ok {
			missing = append(missing, name)
		}
		return x
	})
	for _, name := range missing {
		k.warnf(path, "environment variable %s is not set; %s expands to an empty string", name, subject)
	}
	return out
}

// nonNegative checks an optional count that may be 0.
func (k *checker) nonNegative(path string, v *int) {
	if v != nil && *v < 0 {
		k.errorf(path, "must not be negative, got %d", *v)
	}
}

func (k *checker) atMost(path string, v *int, limit int, unit string) {
	if v != nil && *v > limit {
		k.errorf(path, "must be at most %d %s, got %d", limit, unit, *v)
	}
}

func (k *checker) retryPolicy(p string, mp *ModelProvider, rp *RetryPolicy) {
	for j, fb := range rp.FallbackModels {
		fp := fmt.Sprintf("%s.fallback_models[%d]", p, j)
		switch {
		case fb == "":
			k.errorf(fp, "a fallback model must not be empty")
		case !strings.Contains(fb, "/"):
			k.errorf(fp, "fallback %q must be a target id of the form provider/model", fb)
		case fb == mp.Model:
			// The primary is always attempted first, and a fallback is
			// never a target the request has already tried.
			k.warnf(fp, "fallback %q is this entry's own model; a request never falls back to its primary, so it is skipped (to retry the primary, use strategy same_model or same_model_retries)", fb)
		case k.configured(fb) < 0:
			k.warnf(fp, "fallback %q is not a configured model; it will be skipped", fb)
		}
	}
	if rp.DefaultStrategy == "" {
		rp.DefaultStrategy = DifferentProvider
	}
	k.strategy(p+".default_strategy", rp.DefaultStrategy, false)
	setDefault(&rp.DefaultMaxAttempts, DefaultMaxAttempts)
	k.nonNegative(p+".default_max_attempts", rp.DefaultMaxAttempts)
	switch rp.UnlistedFailover {
	case "", UnlistedSameModel, UnlistedAny, UnlistedNone: // "" is any, and stays unwritten
	default:
		k.errorf(p+".unlisted_failover", "unknown unlisted_failover %q: use same_model, any or none", rp.UnlistedFailover)
	}
	k.nonNegative(p+".same_model_patience_ms", rp.SameModelPatienceMs)
	k.atMost(p+".same_model_patience_ms", rp.SameModelPatienceMs, MaxMilliseconds, "ms (one day)")
	k.nonNegative(p+".same_model_retries", rp.SameModelRetries)
	if rp.Hedge != nil {
		k.hedge(p+".hedge", rp.Hedge)
		if rp.DefaultStrategy == SameModel {
			k.warnf(p+".hedge", "a hedge goes to another target by default_strategy, and this policy's is same_model: no hedge will start")
		}
	}

	type listed struct {
		entry string // the on_status_codes entry that lists the code first
		spec  int    // the index in its codes
	}
	firstSeen := map[int]listed{}
	for j := range rp.OnStatusCodes {
		r := &rp.OnStatusCodes[j]
		rpath := fmt.Sprintf("%s.on_status_codes[%d]", p, j)
		k.nonNegative(rpath+".same_model_retries", r.SameModelRetries)
		if len(r.Codes) == 0 {
			k.errorf(rpath+".codes", "codes is required: a list of status codes or \"start-end\" ranges")
		}
		for c, spec := range r.Codes {
			cpath := fmt.Sprintf("%s.codes[%d]", rpath, c)
			lo, hi, bad := spec.bounds()
			if bad != "" {
				k.errorf(cpath, "%s", bad)
				continue
			}
			// Codes this entry already lists: one warning for the
			// spec, not one per code, since a repeated range is one
			// slip however many codes it spans.
			var again []int
			earlier := -1
			for code := lo; code <= hi; code++ {
				prev, dup := firstSeen[code]
				switch {
				case !dup:
					firstSeen[code] = listed{rpath, c}
				case prev.entry != rpath:
					k.warnf(cpath, "status code %d is already listed in %s, which wins; this entry never applies to it", code, prev.entry)
				default:
					again = append(again, code)
					if earlier < 0 {
						earlier = prev.spec
					}
				}
			}
			if len(again) > 0 {
				k.warnf(cpath, "%s already listed at codes[%d] of this entry; listing a code twice changes nothing", codeList(again), earlier)
			}
		}
		k.strategy(rpath+".strategy", r.Strategy, true)
		switch {
		case r.MaxAttempts == nil:
			k.errorf(rpath+".max_attempts", "max_attempts is required (the total attempts that may fail with these codes; 1 = no retry)")
		case *r.MaxAttempts < 0:
			k.errorf(rpath+".max_attempts", "must not be negative, got %d", *r.MaxAttempts)
		}
	}
	if t := rp.OnTimeout; t != nil {
		k.strategy(p+".on_timeout.strategy", t.Strategy, true)
		k.positive(p+".on_timeout.max_attempts", t.MaxAttempts, true)
		k.nonNegative(p+".on_timeout.same_model_retries", t.SameModelRetries)
	}
	if h := rp.OnHighLatency; h != nil {
		hp := p + ".on_high_latency"
		k.millis(hp+".threshold_ms", h.ThresholdMs, true)
		if h.ThresholdMs != nil && *h.ThresholdMs > 0 && *h.ThresholdMs < 1000 {
			k.warnf(hp+".threshold_ms", "threshold %d ms is under 1000 ms; most LLM answers take longer and will count as slow", *h.ThresholdMs)
		}
		if h.Measure == "" {
			h.Measure = MeasureTTFB
		}
		if h.Measure != MeasureTTFB && h.Measure != MeasureTotal {
			k.errorf(hp+".measure", "unknown measure %q: use ttfb or total", h.Measure)
		}
		if h.MinTriggers != nil && (*h.MinTriggers < 1 || *h.MinTriggers > MaxMinTriggers) {
			k.errorf(hp+".min_triggers", "must be between 1 and %d, got %d", MaxMinTriggers, *h.MinTriggers)
		}
		setDefault(&h.MinTriggers, DefaultMinTriggers)
		switch {
		case h.TriggerWindowSeconds == nil && *h.MinTriggers > 1:
			k.errorf(hp+".trigger_window_seconds", "is required when min_triggers is greater than 1")
		case h.TriggerWindowSeconds != nil:
			k.seconds(hp+".trigger_window_seconds", h.TriggerWindowSeconds, false)
		}
		setDefault(&h.TriggerWindowSeconds, DefaultTriggerWindowSeconds)
		k.strategy(hp+".strategy", h.Strategy, true)
		k.positive(hp+".max_attempts", h.MaxAttempts, true)
		k.seconds(hp+".block_duration_seconds", h.BlockDurationSeconds, false)
		setDefault(&h.BlockDurationSeconds, DefaultBlockDurationSeconds)
		if h.Scope == "" {
			h.Scope = ScopeModel
		}
		k.scope(hp+".scope", h.Scope)
		if h.ApplyTo == "" {
			h.ApplyTo = ApplyGlobal
		}
		k.applyTo(hp+".apply_to", h.ApplyTo)
		if h.Scope == ScopeProvider && h.Strategy == SameModel {
			k.warnf(hp+".scope", "a provider-scoped latency block with strategy same_model ends the request: the only target it would retry is blocked")
		}
	}
	if b := rp.Backoff; b != nil {
		bp := p + ".backoff"
		switch {
		case b.ApplyTo == "":
			k.errorf(bp+".apply_to", "backoff requires apply_to: same_model, same_provider or global")
		case b.ApplyTo != BackoffSameModel && b.ApplyTo != BackoffSameProvider && b.ApplyTo != BackoffGlobal:
			k.errorf(bp+".apply_to", "unknown apply_to %q: use same_model, same_provider or global", b.ApplyTo)
		}
		k.millis(bp+".base_ms", b.BaseMs, false)
		k.atMost(bp+".max_ms", b.MaxMs, MaxMilliseconds, "ms (one day)")
		setDefault(&b.BaseMs, DefaultBackoffBaseMs)
		setDefault(&b.MaxMs, DefaultBackoffMaxMs)
		if *b.MaxMs <= *b.BaseMs {
			k.errorf(bp+".max_ms", "must be greater than base_ms (%d), got %d", *b.BaseMs, *b.MaxMs)
		}
		if b.Jitter == nil {
			j := JitterEqual
			b.Jitter = &j
		}
		if !b.Jitter.valid() {
			k.errorf(bp+".jitter", "unknown jitter %q: use true, false, none, equal, full or decorrelated", *b.Jitter)
		}
		switch {
		case b.ApplyTo == BackoffSameModel && rp.DefaultStrategy == DifferentProvider &&
			(rp.SameModelRetries == nil || *rp.SameModelRetries == 0): // same_model_retries retries the same model
			k.warnf(bp+".apply_to", "backoff applies only to same-model retries, but default_strategy different_provider never retries the same model, so it rarely applies")
		case b.ApplyTo == BackoffSameProvider && rp.DefaultStrategy == SameModel:
			k.warnf(bp+".apply_to", "backoff apply_to same_provider with default_strategy same_model: every retry stays on the same model; say apply_to: same_model to state that")
		}
	}
	if rp.RetryAfterHandling == nil {
		rp.RetryAfterHandling = &RetryAfterHandling{}
	}
	ra := rp.RetryAfterHandling
	rap := p + ".retry_after_handling"
	if ra.Scope == "" {
		ra.Scope = ScopeModel
	}
	k.scope(rap+".scope", ra.Scope)
	if ra.ApplyTo == "" {
		ra.ApplyTo = ApplyGlobal
	}
	k.applyTo(rap+".apply_to", ra.ApplyTo)
	k.seconds(rap+".max_retry_after_seconds", ra.MaxRetryAfterSeconds, false)
	setDefault(&ra.MaxRetryAfterSeconds, DefaultMaxRetryAfterSeconds)
	if ra.Scope == ScopeProvider && rp.DefaultStrategy == SameModel {
		k.warnf(rap+".scope", "a provider-scoped Retry-After block with default_strategy same_model blocks the very target the retry needs")
	}
	k.millis(p+".max_retry_duration_ms", rp.MaxRetryDurationMs, false)

	// Every strategy the policy uses, to warn when one has no target.
	for _, s := range strategiesOf(p, rp) {
		if !s.s.valid() || s.s == SameModel {
			continue
		}
		if listed, others := alternatives(k.cfg, mp.Model, rp, s.s); listed == 0 && len(others) == 0 {
			k.warnf(s.path, "strategy %s needs another target, but no other configured model matches it; such failures end the request", s.s)
		}
	}
}

// Unlisted is a policy that may fail over to targets it does not list.
type Unlisted struct {
	Path    string // the policy's path, "model_providers[i].retry_policy"
	Model   string // its primary
	Mode    UnlistedFailover
	Targets []string // the targets it does not list that the random pick may choose, sorted
}

// UnlistedFailovers lists the policies of a finalized c that, once their
// fallback_models are used up, may fail over to configured targets they do
// not list (unlisted_failover any or same_model), with those targets. A
// gateway says so at startup: with unlisted_failover: any (the default,
// the reference behaviour) a request for one model can be answered by an
// unrelated one.
func UnlistedFailovers(c *Config) []Unlisted {
	var out []Unlisted
	for i := range c.ModelProviders {
		mp := &c.ModelProviders[i]
		rp := mp.RetryPolicy
		if rp == nil {
			continue
		}
		var targets []string
		for _, s := range strategiesOf("", rp) {
			if s.s == SameModel {
				continue
			}
			_, others := alternatives(c, mp.Model, rp, s.s)
			for _, o := range others {
				if !slices.Contains(targets, o) {
					targets = append(targets, o)
				}
			}
		}
		if len(targets) > 0 {
			sort.Strings(targets)
			mode := rp.UnlistedFailover
			if mode == "" {
				mode = UnlistedAny
			}
			out = append(out, Unlisted{Path: fmt.Sprintf("model_providers[%d].retry_policy", i), Model: mp.Model, Mode: mode, Targets: targets})
		}
	}
	return out
}

// strategiesOf returns every strategy a policy can resolve a failure to,
// each with its path under the policy's path p; unset ones are left out.
func strategiesOf(p string, rp *RetryPolicy) []strategyAt {
	out := []strategyAt{{p + ".default_strategy", rp.DefaultStrategy}}
	for j, e := range rp.OnStatusCodes {
		out = append(out, strategyAt{fmt.Sprintf("%s.on_status_codes[%d].strategy", p, j), e.Strategy})
	}
	if t := rp.OnTimeout; t != nil {
		out = append(out, strategyAt{p + ".on_timeout.strategy", t.Strategy})
	}
	if h := rp.OnHighLatency; h != nil {
		out = append(out, strategyAt{p + ".on_high_latency.strategy", h.Strategy})
	}
	return slices.DeleteFunc(out, func(s strategyAt) bool { return s.s == "" })
}

// alternatives returns how many of primary's fallback_models the strategy
// allows, and the targets it does not list that the random pick may choose
// after them under unlisted_failover.
func alternatives(cfg *Config, primary string, rp *RetryPolicy, s Strategy) (listed int, others []string) {
	pp := ProviderOf(primary)
	matches := func(m string) bool {
		return m != primary && m != "" && (ProviderOf(m) == pp) == (s == SameProvider)
	}
	configured := map[string]bool{}
	for _, mp := range cfg.ModelProviders {
		configured[mp.Model] = true
	}
	for _, fb := range rp.FallbackModels {
		if configured[fb] && matches(fb) {
			listed++
		}
	}
	if rp.UnlistedFailover == UnlistedNone {
		return listed, nil
	}
	// "" is any, the default.
	for _, mp := range cfg.ModelProviders {
		if !matches(mp.Model) || slices.Contains(rp.FallbackModels, mp.Model) {
			continue
		}
		if rp.UnlistedFailover == UnlistedSameModel && ModelOf(mp.Model) != ModelOf(primary) {
			continue
		}
		others = append(others, mp.Model)
	}
	return listed, others
}

type strategyAt struct {
	path string
	s    Strategy
}

func (k *checker) scope(path string, s Scope) {
	if s != ScopeModel && s != ScopeProvider {
		k.errorf(path, "unknown scope %q: use model or provider", s)
	}
}

func (k *checker) applyTo(path string, a ApplyTo) {
	if a != ApplyGlobal && a != ApplyRequest {
		k.errorf(path, "unknown apply_to %q: use global or request", a)
	}
}

func (k *checker) configured(model string) int {
	for i, mp := range k.cfg.ModelProviders {
		if mp.Model == model {
			return i
		}
	}
	return -1
}

func (k *checker) timeouts(p string, t *Timeouts) {
	for _, f := range []struct {
		name string
		d    *Duration
	}{{"connect", t.Connect}, {"headers", t.Headers}, {"first_token", t.FirstToken}, {"idle", t.Idle}, {"attempt", t.Attempt}} {
		switch {
		case f.d == nil:
		case *f.d < 0:
			k.errorf(p+"."+f.name, "must not be negative, got %s", time.Duration(*f.d))
		case *f.d > Duration(MaxTimeout):
			k.errorf(p+"."+f.name, "must be at most %s (one day), got %s", MaxTimeout, time.Duration(*f.d))
		}
	}
}

func (k *checker) engine() {
	if k.cfg.Engine == nil {
		k.cfg.Engine = &EngineConfig{}
	}
	e := k.cfg.Engine
	if e.MaxRetryingRequests != nil && *e.MaxRetryingRequests < 0 {
		k.errorf("engine.max_retrying_requests", "must not be negative, got %d (0 means no bound)", *e.MaxRetryingRequests)
	}
	setDefault(&e.MaxRetryingRequests, DefaultMaxRetryingRequests)
	if e.RetryBudget == nil {
		e.RetryBudget = &RetryBudget{}
	}
	b := e.RetryBudget
	setDefault(&b.Enabled, true)
	setDefault(&b.Percent, DefaultBudgetPercent)
	if !(*b.Percent >= 0 && *b.Percent <= 100) { // written so that NaN fails too
		k.errorf("engine.retry_budget.percent", "must be between 0 and 100, got %g", *b.Percent)
	}
	setDefault(&b.MinPerSecond, DefaultBudgetMinPerSecond)
	if !(*b.MinPerSecond >= 0) || math.IsInf(*b.MinPerSecond, 1) { // NaN fails too
		k.errorf("engine.retry_budget.min_per_second", "must be a finite number, not negative, got %g", *b.MinPerSecond)
	}
	if b.Window == nil {
		w := Duration(DefaultBudgetWindow)
		b.Window = &w
	}
	if *b.Window < Duration(time.Second) || *b.Window > Duration(MaxBudgetWindow) {
		k.errorf("engine.retry_budget.window", "must be between 1s and %s (the budget keeps a counter per second of it), got %s", MaxBudgetWindow, time.Duration(*b.Window))
	}
	if e.Timeouts == nil {
		e.Timeouts = &Timeouts{}
	}
	t := e.Timeouts
	k.timeouts("engine.timeouts", t)
	fill := func(d **Duration, v time.Duration) {
		if *d == nil {
			x := Duration(v)
			*d = &x
		}
	}
	fill(&t.Connect, DefaultConnectTimeout)
	fill(&t.Headers, DefaultHeadersTimeout)
	fill(&t.FirstToken, DefaultFirstTokenTimeout)
	fill(&t.Idle, DefaultIdleTimeout)
	fill(&t.Attempt, 0)

	if e.PassiveHealth == nil {
		e.PassiveHealth = &PassiveHealth{}
	}
	ph := e.PassiveHealth
	k.passiveHealthKeys("engine.passive_health", ph)
	k.enginePH = *ph
	setDefault(&ph.Enabled, true)
	setDefault(&ph.ConsecutiveFailures, DefaultConsecutiveFailures)
	fill(&ph.Cooldown, DefaultCooldown)
	fill(&ph.MaxCooldown, DefaultMaxCooldown)
	if ph.Scope == "" {
		ph.Scope = ScopeModel
	}
}

// passiveHealthKeys checks the keys of a passive_health block that are set,
// each on its own; passiveHealth checks them together.
func (k *checker) passiveHealthKeys(p string, ph *PassiveHealth) {
	if n := ph.ConsecutiveFailures; n != nil && (*n < 1 || *n > MaxConsecutiveFailures) {
		k.errorf(p+".consecutive_failures", "must be between 1 and %d, got %d", MaxConsecutiveFailures, *n)
	}
	for _, f := range []struct {
		name string
		d    *Duration
	}{{"cooldown", ph.Cooldown}, {"max_cooldown", ph.MaxCooldown}} {
		switch {
		case f.d == nil:
		case *f.d <= 0:
			k.errorf(p+"."+f.name, "must be greater than 0, got %s", time.Duration(*f.d))
		case *f.d > Duration(MaxEjectionCooldown):
			k.errorf(p+"."+f.name, "must be at most %s (one hour), got %s", MaxEjectionCooldown, time.Duration(*f.d))
		}
	}
	if ph.Scope != "" {
		k.scope(p+".scope", ph.Scope)
	}
}

func cooldownInRange(d *Duration) bool { return *d > 0 && *d <= Duration(MaxEjectionCooldown) }

// passiveHealth checks the passive_health of every target: the keys of a
// provider's own block, then the block merged with engine.passive_health
// (after engine has filled its defaults), as compile merges it.
//
// max_cooldown must be at least cooldown once merged, so a provider's
// cooldown: 1m fails against the engine's max_cooldown of 30s. The problem
// is reported where a value was written: at max_cooldown when the block
// sets it, else at cooldown; the message says where the other value came
// from. A pair inherited whole was reported at the block it came from.
func (k *checker) passiveHealth() {
	const ep = "engine.passive_health"
	def := k.cfg.Engine.PassiveHealth
	inherited := func(key string, set *Duration) string {
		if set != nil {
			return "from " + ep + "." + key
		}
		return "the default"
	}
	k.cooldownPair(ep, &k.enginePH, *def, func(string) string { return "the default" })
	warned := map[string]bool{}
	for i := range k.cfg.ModelProviders {
		own := k.cfg.ModelProviders[i].PassiveHealth
		p := fmt.Sprintf("model_providers[%d].passive_health", i)
		if own != nil {
			k.passiveHealthKeys(p, own)
		}
		m := passiveHealthOf(def, own)
		if own != nil {
			k.cooldownPair(p, own, m, func(key string) string {
				if key == "cooldown" {
					return inherited(key, k.enginePH.Cooldown)
				}
				return inherited(key, k.enginePH.MaxCooldown)
			})
		}
		if !*m.Enabled || !cooldownInRange(m.MaxCooldown) || *m.MaxCooldown < *m.Cooldown || m.MaxCooldown.D() <= longCooldown {
			continue
		}
		at := ep + ".max_cooldown"
		if own != nil && own.MaxCooldown != nil {
			at = p + ".max_cooldown"
		}
		if !warned[at] {
			warned[at] = true
			k.warnf(at, "a recovered target stays ejected for up to %s before a request probes it; keep max_cooldown at %s or less so that recovery is prompt", m.MaxCooldown.D(), longCooldown)
		}
	}
}

// cooldownPair checks that the merged max_cooldown m of the block at p is
// at least its cooldown. own holds the keys written at p; from says where an
// inherited value came from.
func (k *checker) cooldownPair(p string, own *PassiveHealth, m PassiveHealth, from func(key string) string) {
	if !cooldownInRange(m.Cooldown) || !cooldownInRange(m.MaxCooldown) || *m.MaxCooldown >= *m.Cooldown {
		return // a value out of range is reported by passiveHealthKeys
	}
	c, mx := m.Cooldown.D(), m.MaxCooldown.D()
	switch {
	case own.MaxCooldown != nil && own.Cooldown != nil:
		k.errorf(p+".max_cooldown", "must be at least cooldown (%s), got %s", c, mx)
	case own.MaxCooldown != nil:
		k.errorf(p+".max_cooldown", "must be at least cooldown (%s, %s), got %s", c, from("cooldown"), mx)
	case own.Cooldown != nil:
		k.errorf(p+".cooldown", "must be at most max_cooldown (%s, %s), got %s", mx, from("max_cooldown"), c)
	}
}

// ProviderOf returns the provider of a target: the text before the first
// "/", or the whole string when it has none.
func ProviderOf(target string) string {
	if i := strings.IndexByte(target, '/'); i >= 0 {
		return target[:i]
	}
	return target
}

// ModelOf returns the model name of a target id, without its provider
// prefix: "gpt-4o" for "openai/gpt-4o", "" for an id without one.
func ModelOf(target string) string {
	return strings.TrimPrefix(target[len(ProviderOf(target)):], "/")
}

// codeList renders ascending status codes for a message, runs as ranges:
// "status code 429", "status codes 500-504, 507".
func codeList(codes []int) string {
	var parts []string
	for i := 0; i < len(codes); {
		j := i
		for j+1 < len(codes) && codes[j+1] == codes[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", codes[i], codes[j]))
		} else {
			parts = append(parts, strconv.Itoa(codes[i]))
		}
		i = j + 1
	}
	if len(codes) == 1 {
		return "status code " + parts[0] + " is"
	}
	return "status codes " + strings.Join(parts, ", ") + " are"
}
