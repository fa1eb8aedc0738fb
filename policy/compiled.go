package policy

import (
	"time"
)

// Compiled is the form of a finalized Config that the engine reads on
// every request: targets and providers numbered densely so that state can
// live in flat arrays, and each retry_policy turned into Rules. It is
// immutable and safe for concurrent use.
//
// Identifiers: target i has identifier i; provider j has identifier
// NumTargets()+j. Health state is keyed by identifier.
type Compiled struct {
	Targets    []string        // target index → target id
	Providers  []string        // provider index → provider name
	ProviderOf []int           // target index → provider index
	Members    [][]int         // provider index → its target indices, ascending
	Peers      [][]int         // target index → the other targets of the same model name, ascending
	Models     []string        // target index → model name without its provider prefix
	Rules      []*Rules        // target index → its retry policy; nil when it has none
	Limits     []Limits        // target index → its per-attempt timeouts, resolved
	Ejection   []*EjectionRule // target index → its rule; nil when passive health is off for it
	// Continuation: target index → how it can continue a cut stream
	// (ContinueNone when it cannot)
	Continuation []Continuation
	// TTFBPercentiles are the distinct hedge delay_percentile values of
	// every retry_policy, in the order first met: the percentiles of the
	// time to first token the health state keeps per target
	// (HedgeRule.PercentileIndex indexes it). Empty when no policy hedges
	// by percentile.
	TTFBPercentiles []float64

	index map[string]int      // target id → index
	bare  map[string]int      // bare model name → index, when exactly one target has it
	ambig map[string][]string // bare model names several targets share → their target ids
}

// Limits are the per-attempt timeouts of one target: engine.timeouts with
// the provider's own timeouts keys laid over them, resolved once when the
// configuration is compiled. 0 means no limit.
type Limits struct {
	Connect, Headers, FirstToken, Idle, Attempt time.Duration
}

// EjectionRule is the compiled passive_health of one target:
// engine.passive_health with the target's own passive_health keys laid over
// it, resolved once when the configuration is compiled
// (docs/behaviour.md#passive-health). A target's rule applies whenever it is
// attempted, as a primary or as a fallback, with or without a retry_policy.
type EjectionRule struct {
	Consecutive int           // failures in a row that eject; ≥ 1
	Cooldown    time.Duration // length of a first ejection
	MaxCooldown time.Duration // cap of the doubling; ≥ Cooldown
	Scope       Scope         // ScopeModel: the target is ejected; ScopeProvider: its provider (every target of it)
}

// Resolve finds the target a client's model name means: a target id
// ("openai/gpt-4o") first, else a bare model name ("gpt-4o") that exactly
// one target has. When several targets share the bare name it returns -1
// and their ids; for an unknown name, -1 and nil.
func (c *Compiled) Resolve(name string) (t int, ambiguous []string) {
	if i, ok := c.index[name]; ok {
		return i, nil
	}
	if i, ok := c.bare[name]; ok {
		return i, nil
	}
	return -1, c.ambig[name]
}

// NumTargets returns the number of configured targets.
func (c *Compiled) NumTargets() int { return len(c.Targets) }

// NumIDs returns the number of identifiers: targets plus providers.
func (c *Compiled) NumIDs() int { return len(c.Targets) + len(c.Providers) }

// Lookup returns the index of a configured target.
func (c *Compiled) Lookup(target string) (int, bool) {
	i, ok := c.index[target]
	return i, ok
}

// ProviderID returns the identifier of target t's provider.
func (c *Compiled) ProviderID(t int) int { return len(c.Targets) + c.ProviderOf[t] }

// ID returns the identifier a block with the given scope uses for target t.
func (c *Compiled) ID(t int, s Scope) int {
	if s == ScopeProvider {
		return c.ProviderID(t)
	}
	return t
}

// IDName returns the target id or provider name of an identifier.
func (c *Compiled) IDName(id int) string {
	if id < len(c.Targets) {
		return c.Targets[id]
	}
	return c.Providers[id-len(c.Targets)]
}

// SameProvider reports whether targets a and b have the same provider.
func (c *Compiled) SameProvider(a, b int) bool { return c.ProviderOf[a] == c.ProviderOf[b] }

// Action is what a classification resolves to: where to go next and how
// many failures of that key the request may have.
type Action struct {
	Strategy    Strategy
	MaxAttempts int // ≥ 1; a configured 0 behaves as 1
}

// Key identifies a failure counter of a request (docs/behaviour.md#failure-counters): each HTTP
// status separately, all timeouts together, all latency events together.
type Key int

// The non-status keys.
const (
	KeyTimeout Key = -1
	KeyLatency Key = -2
)

// Rules is a compiled retry_policy.
type Rules struct {
	Fallbacks         []int // configured fallback targets, in order, without duplicates
	Default           Action
	Timeout           Action // on_timeout, or Default
	Latency           *LatencyRule
	Backoff           *BackoffRule
	RetryAfter        RetryAfterRule
	MaxRetryDuration  time.Duration // max_retry_duration_ms, the time budget; 0 = none
	SameModelRetries  int
	SameModelPatience time.Duration    // same_model_patience_ms, or its default
	Unlisted          UnlistedFailover // which targets the random pick may choose; "" is any
	ContinueStreams   bool             // continue_streams, or its default (true)
	Hedge             *HedgeRule       // hedge; nil: no hedging

	first   [600 - 100]int32 // status code - 100 → index+1 of the first entry that lists it
	actions []Action         // per on_status_codes entry
	sets    []CodeSet        // per on_status_codes entry
	same    []int            // per on_status_codes entry: its same_model_retries, -1 to inherit

	timeoutSame int // on_timeout.same_model_retries, -1 when not set
}

// LatencyRule is a compiled on_high_latency.
type LatencyRule struct {
	Threshold   time.Duration
	Measure     Measure
	MinTriggers int
	Window      time.Duration
	Block       time.Duration
	Scope       Scope
	ApplyTo     ApplyTo
	Action      Action
}

// BackoffRule is a compiled backoff.
type BackoffRule struct {
	Gate   BackoffApply
	Base   time.Duration
	Max    time.Duration
	Jitter Jitter
}

// RetryAfterRule is the effective retry_after_handling.
type RetryAfterRule struct {
	Scope   Scope
	ApplyTo ApplyTo
	Max     time.Duration
}

// CodeSet is a set of HTTP status codes 100–599 as a bitmap: membership is
// a shift and a mask.
type CodeSet [8]uint64

// Add puts code c in the set; codes outside 100–599 are ignored.
func (s *CodeSet) Add(c int) {
	if c >= 100 && c <= 599 {
		s[(c-100)>>6] |= 1 << ((c - 100) & 63)
	}
}

// Has reports whether code c is in the set.
func (s *CodeSet) Has(c int) bool {
	if c < 100 || c > 599 {
		return false
	}
	return s[(c-100)>>6]&(1<<((c-100)&63)) != 0
}

// Codes returns the members in ascending order.
func (s *CodeSet) Codes() []int {
	var out []int
	for c := 100; c <= 599; c++ {
		if s.Has(c) {
			out = append(out, c)
		}
	}
	return out
}

// ExpandCodes expands a codes list into a set. It assumes the specs were
// validated; invalid ones are skipped.
func ExpandCodes(specs []CodeSpec) CodeSet {
	var s CodeSet
	for _, spec := range specs {
		lo, hi, bad := spec.bounds()
		if bad != "" {
			continue
		}
		for c := lo; c <= hi; c++ {
			s.Add(c)
		}
	}
	return s
}

// SameRetries returns how many same-target retries a failure allows before
// the strategy moves on (same_model_retries): the on_status_codes entry's
// own value for an HTTP error of the status that entry lists, the
// on_timeout value for a timeout or transport error, else the policy's.
// Without an on_timeout value, a timeout gets none (a target silent until
// a timeout is unlikely to answer the next attempt) and a transport error
// at most one (a reset is often a single broken connection).
func (r *Rules) SameRetries(c Class, status int, timedOut bool) int {
	switch c {
	case HTTPError:
		if status >= 100 && status <= 599 {
			if i := r.first[status-100]; i > 0 && r.same[i-1] >= 0 {
				return r.same[i-1]
			}
		}
	case Timeout:
		switch {
		case r.timeoutSame >= 0:
			return r.timeoutSame
		case timedOut:
			return 0
		default:
			return min(r.SameModelRetries, 1)
		}
	}
	return r.SameModelRetries
}

// Entries returns the number of on_status_codes entries.
func (r *Rules) Entries() int { return len(r.actions) }

// Entry returns the code set and action of on_status_codes entry i.
func (r *Rules) Entry(i int) (CodeSet, Action) { return r.sets[i], r.actions[i] }

func action(s Strategy, max int) Action {
	if max < 1 {
		max = 1
	}
	return Action{Strategy: s, MaxAttempts: max}
}

func compile(c *Config) *Compiled {
	n := len(c.ModelProviders)
	out := &Compiled{
		Targets:      make([]string, n),
		ProviderOf:   make([]int, n),
		Models:       make([]string, n),
		Rules:        make([]*Rules, n),
		Limits:       make([]Limits, n),
		Ejection:     make([]*EjectionRule, n),
		Continuation: make([]Continuation, n),
		index:        make(map[string]int, n),
		bare:         make(map[string]int),
		ambig:        make(map[string][]string),
	}
	providers := map[string]int{}
	for i, mp := range c.ModelProviders {
		out.Targets[i] = mp.Model
		out.index[mp.Model] = i
		p := ProviderOf(mp.Model)
		j, ok := providers[p]
		if !ok {
			j = len(out.Providers)
			providers[p] = j
			out.Providers = append(out.Providers, p)
		}
		out.ProviderOf[i] = j
		if j == len(out.Members) {
			out.Members = append(out.Members, nil)
		}
		out.Members[j] = append(out.Members[j], i)
		out.Models[i] = ModelOf(mp.Model)
	}
	def := c.Engine.Timeouts
	for i, mp := range c.ModelProviders {
		out.Limits[i] = limitsOf(def, mp.Timeouts)
		out.Continuation[i] = mp.Continuation
		if out.Continuation[i] == "" {
			out.Continuation[i] = ContinueNone
		}
		if ph := passiveHealthOf(c.Engine.PassiveHealth, mp.PassiveHealth); *ph.Enabled {
			out.Ejection[i] = &EjectionRule{
				Consecutive: *ph.ConsecutiveFailures,
				Cooldown:    ph.Cooldown.D(),
				MaxCooldown: ph.MaxCooldown.D(),
				Scope:       ph.Scope,
			}
		}
	}
	out.resolveBareNames()
	out.Peers = make([][]int, n)
	byModel := map[string][]int{}
	for i, m := range out.Models {
		byModel[m] = append(byModel[m], i)
	}
	for i, m := range out.Models {
		for _, j := range byModel[m] {
			if j != i {
				out.Peers[i] = append(out.Peers[i], j)
			}
		}
	}
	for i, mp := range c.ModelProviders {
		if mp.RetryPolicy != nil {
			out.Rules[i] = compileRules(mp.RetryPolicy, out)
		}
	}
	return out
}

// limitsOf lays a provider's timeouts over the engine's.
func limitsOf(def, p *Timeouts) Limits {
	if def == nil {
		def = &Timeouts{}
	}
	if p == nil {
		p = &Timeouts{}
	}
	pick := func(d, o *Duration) time.Duration {
		if o != nil {
			return o.D()
		}
		return d.D()
	}
	return Limits{
		Connect:    pick(def.Connect, p.Connect),
		Headers:    pick(def.Headers, p.Headers),
		FirstToken: pick(def.FirstToken, p.FirstToken),
		Idle:       pick(def.Idle, p.Idle),
		Attempt:    pick(def.Attempt, p.Attempt),
	}
}

// passiveHealthOf lays a provider's passive_health over the engine's, key
// by key. def must have every key set, as Finalize leaves it; the result
// then has every key set too. Validation and compilation both merge with it,
// so that the values checked are the values compiled.
func passiveHealthOf(def, p *PassiveHealth) PassiveHealth {
	out := *def
	if p == nil {
		return out
	}
	if p.Enabled != nil {
		out.Enabled = p.Enabled
	}
	if p.ConsecutiveFailures != nil {
		out.ConsecutiveFailures = p.ConsecutiveFailures
	}
	if p.Cooldown != nil {
		out.Cooldown = p.Cooldown
	}
	if p.MaxCooldown != nil {
		out.MaxCooldown = p.MaxCooldown
	}
	if p.Scope != "" {
		out.Scope = p.Scope
	}
	return out
}

// resolveBareNames indexes the bare model names. A target id always wins
// over a bare name another target has; a bare name several targets share
// resolves to none of them.
func (c *Compiled) resolveBareNames() {
	for i, m := range c.Models {
		if m == "" || m == c.Targets[i] {
			continue
		}
		if _, isID := c.index[m]; isID {
			continue
		}
		if prev, ok := c.bare[m]; ok {
			c.ambig[m] = append(c.ambig[m], c.Targets[prev])
			delete(c.bare, m)
		}
		if ids, ok := c.ambig[m]; ok {
			c.ambig[m] = append(ids, c.Targets[i])
			continue
		}
		c.bare[m] = i
	}
}

func compileRules(rp *RetryPolicy, c *Compiled) *Rules {
	r := &Rules{Default: action(rp.DefaultStrategy, *rp.DefaultMaxAttempts)}
	for _, fb := range rp.FallbackModels {
		t, ok := c.index[fb]
		if !ok {
			continue
		}
		dup := false
		for _, have := range r.Fallbacks {
			dup = dup || have == t
		}
		if !dup {
			r.Fallbacks = append(r.Fallbacks, t)
		}
	}
	for _, e := range rp.OnStatusCodes {
		set := ExpandCodes(e.Codes)
		r.sets = append(r.sets, set)
		r.actions = append(r.actions, action(e.Strategy, *e.MaxAttempts))
		same := -1
		if e.SameModelRetries != nil {
			same = *e.SameModelRetries
		}
		r.same = append(r.same, same)
		for code := 100; code <= 599; code++ {
			if set.Has(code) && r.first[code-100] == 0 {
				r.first[code-100] = int32(len(r.actions))
			}
		}
	}
	r.Timeout = r.Default
	r.timeoutSame = -1
	if t := rp.OnTimeout; t != nil {
		r.Timeout = action(t.Strategy, *t.MaxAttempts)
		if t.SameModelRetries != nil {
			r.timeoutSame = *t.SameModelRetries
		}
	}
	if h := rp.OnHighLatency; h != nil {
		r.Latency = &LatencyRule{
			Threshold:   time.Duration(*h.ThresholdMs) * time.Millisecond,
			Measure:     h.Measure,
			MinTriggers: *h.MinTriggers,
			Window:      time.Duration(*h.TriggerWindowSeconds) * time.Second,
			Block:       time.Duration(*h.BlockDurationSeconds) * time.Second,
			Scope:       h.Scope,
			ApplyTo:     h.ApplyTo,
			Action:      action(h.Strategy, *h.MaxAttempts),
		}
	}
	if b := rp.Backoff; b != nil {
		r.Backoff = &BackoffRule{
			Gate:   b.ApplyTo,
			Base:   time.Duration(*b.BaseMs) * time.Millisecond,
			Max:    time.Duration(*b.MaxMs) * time.Millisecond,
			Jitter: *b.Jitter,
		}
	}
	ra := rp.RetryAfterHandling
	r.RetryAfter = RetryAfterRule{Scope: ra.Scope, ApplyTo: ra.ApplyTo, Max: time.Duration(*ra.MaxRetryAfterSeconds) * time.Second}
	if rp.MaxRetryDurationMs != nil {
		r.MaxRetryDuration = time.Duration(*rp.MaxRetryDurationMs) * time.Millisecond
	}
	if rp.SameModelRetries != nil {
		r.SameModelRetries = *rp.SameModelRetries
	}
	r.SameModelPatience = DefaultSameModelPatienceMs * time.Millisecond
	if rp.SameModelPatienceMs != nil {
		r.SameModelPatience = time.Duration(*rp.SameModelPatienceMs) * time.Millisecond
	}
	r.Unlisted = rp.UnlistedFailover
	r.ContinueStreams = rp.ContinueStreams == nil || *rp.ContinueStreams
	if h := rp.Hedge; h != nil {
		r.Hedge = compileHedge(h, c)
	}
	return r
}
