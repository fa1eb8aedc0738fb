package engine

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/reroute-go/reroute/policy"
)

// Properties of Do over random configurations and random upstream scripts,
// in virtual time (docs/behaviour.md).
//
// Each case builds a configuration of 2–5 targets over 2–3 providers with
// random retry policies, scripts every target with a random sequence of
// answers, and sends a few requests one after another with a Sync of the
// health actor between them, so that the engine's knowledge of blocks is
// exactly the sum of what the earlier requests reported. A naive model
// (propModel) replays each request from the calls the fake upstream
// recorded and checks every decision the engine made against docs/behaviour.md#the-request-loop:
// where the next attempt may go, how long the wait before it may be, when
// the request must end and why, and what the exhaustion error says. The
// properties the model implies are also checked on their own, in the terms
// a user would state them (propInvariants):
//
//	(a) no attempt goes to a target while a block the engine knows of
//	    covers it;
//	(b) failures of each classification key stay within its max_attempts,
//	    and without a retry_policy there is exactly one attempt;
//	(c) attempts after the first failure start within
//	    max_retry_duration_ms of it, and nothing starts or returns after the
//	    request's deadline;
//	(d) Do returns exactly one of a Result and an error, and
//	    Result.Attempts is the number of calls made;
//	(e) an *ExhaustedError lists exactly the failed attempts, in order,
//	    numbered from 1 without gaps.
//
// The random choices of the engine (the random pick, jitter) are not
// predicted: the model accepts any target the strategy allows and any wait
// within the jitter's range, and follows the choice the engine made.
//
// A failing case prints its seed, configuration, script and requests;
// rerun it alone with -run 'TestProperties/seed=0x5eed002a'. Run more cases
// with -prop.cases and other seeds with -prop.base.
func TestProperties(t *testing.T) {
	for i := range *propCases {
		seed := *propBase + uint64(i)
		t.Run(fmt.Sprintf("seed=%#x", seed), func(t *testing.T) {
			t.Parallel()
			runPropCase(t, seed)
		})
	}
}

var (
	propCases = flag.Int("prop.cases", 400, "number of random cases of TestProperties")
	propBase  = flag.Uint64("prop.base", 0x5eed0000, "seed of the first case of TestProperties")
)

func runPropCase(t *testing.T, seed uint64) {
	rnd := rand.New(rand.NewPCG(seed, seed^0xda3e39cb94b95bdb))
	g := genPropConfig(rnd)
	y := g.yaml()
	script := genPropScript(rnd, g)
	nreq := 1 + rnd.IntN(6)

	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, y, WithSeed(seed))
		up := &propUpstream{script: script, next: map[string]int{}}
		model := newPropModel(g, e.Compiled())
		ctx := testContext(t)
		var log []string
		counts := make([]Counts, len(g.targets))
		for r := range nreq {
			if r > 0 {
				time.Sleep(time.Duration(rnd.IntN(30_000)) * time.Millisecond)
			}
			if err := e.Actor().Sync(ctx); err != nil {
				t.Fatal(err)
			}
			primary := g.targets[rnd.IntN(len(g.targets))]
			// Deadlines are 0.5 ms off the whole milliseconds that
			// latencies, timeouts, Retry-After values and unjittered
			// backoffs are made of, so that a deadline does not tie with
			// another timer (which of two simultaneous timers fires first
			// is not defined); a jittered wait, drawn to the nanosecond,
			// ties only by a negligible chance.
			timeout := time.Duration(3+rnd.IntN(58))*time.Second + 500*time.Microsecond
			rctx, cancel := context.WithTimeout(context.Background(), timeout)
			deadline, _ := rctx.Deadline()
			n0 := len(up.calls)
			t0 := time.Now()
			res, err := e.Do(rctx, primary, up.call)
			ret := time.Now()
			cancel()
			rr := &propRequest{primary: primary, t0: t0, ret: ret, deadline: deadline, calls: up.calls[n0:], res: res, err: err}
			log = append(log, rr.String())
			before := model.glob.clone()
			problems := model.check(rr)
			problems = append(problems, propInvariants(g, e.Compiled(), rr, before)...)
			problems = append(problems, propCounts(e, rr, counts)...)
			if len(problems) > 0 {
				t.Fatalf("seed %#x, request %d of %d:\n  %s\nconfiguration:\n%s\nscript: %v\nrequests:\n%s",
					seed, r+1, nreq, strings.Join(problems, "\n  "), y, script, strings.Join(log, "\n"))
			}
		}
	})
}

// ---- the random configuration ----

type propAction struct {
	strategy policy.Strategy
	max      int // as written; 0 behaves as 1
}

func (a propAction) limit() int { return max(a.max, 1) }

type propEntry struct {
	codes string // YAML flow list
	set   map[int]bool
	act   propAction
}

type propLatency struct {
	thresholdMs int
	measure     policy.Measure
	act         propAction
	blockS      int
	scope       policy.Scope
	applyTo     policy.ApplyTo
}

type propBackoff struct {
	gate   policy.BackoffApply
	baseMs int    // 0 = absent (100)
	maxMs  int    // 0 = absent (5000)
	jitter string // "" = absent (equal)
}

type propRA struct {
	scope   policy.Scope   // "" = absent (model)
	applyTo policy.ApplyTo // "" = absent (global)
	maxS    int            // 0 = absent (300)
}

type propPolicy struct {
	fallbacks   []string
	defStrategy policy.Strategy // "" = absent
	defMax      int             // -1 = absent
	entries     []propEntry
	onTimeout   *propAction
	latency     *propLatency
	backoff     *propBackoff
	ra          *propRA
	budgetMs    int // 0 = absent
}

type propConfig struct {
	targets  []string
	policies []*propPolicy   // per target; nil = no retry_policy
	override []time.Duration // per target: timeouts.attempt override; -1 = none
	attempt  time.Duration   // engine.timeouts.attempt; 0 = none
}

var propStrategies = []policy.Strategy{policy.SameModel, policy.SameProvider, policy.DifferentProvider}

var propCodeSets = []struct {
	yaml string
	lo   []int
	hi   []int
}{
	{"[429]", []int{429}, []int{429}},
	{"[500]", []int{500}, []int{500}},
	{"[503]", []int{503}, []int{503}},
	{"[429, 503]", []int{429, 503}, []int{429, 503}},
	{`["500-504"]`, []int{500}, []int{504}},
	{`["400-499"]`, []int{400}, []int{499}},
	{`[429, "500-599"]`, []int{429, 500}, []int{429, 599}},
}

func genPropConfig(r *rand.Rand) *propConfig {
	nprov := 2 + r.IntN(2)
	n := max(2, nprov) + r.IntN(5-max(2, nprov)+1)
	g := &propConfig{}
	for i := range n {
		p := i
		if i >= nprov {
			p = r.IntN(nprov)
		}
		g.targets = append(g.targets, fmt.Sprintf("p%d/m%d", p, i))
	}
	if r.IntN(3) > 0 {
		g.attempt = time.Duration(1+r.IntN(5)) * time.Second
	}
	for i := range n {
		g.override = append(g.override, -1)
		if r.IntN(6) == 0 {
			g.override[i] = time.Duration(r.IntN(4)) * time.Second
		}
		if r.IntN(5) == 0 {
			g.policies = append(g.policies, nil)
			continue
		}
		g.policies = append(g.policies, genPropPolicy(r, g.targets, i))
	}
	return g
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func genPropPolicy(r *rand.Rand, targets []string, self int) *propPolicy {
	p := &propPolicy{defMax: -1}
	for _, i := range r.Perm(len(targets)) {
		if i != self && r.IntN(2) == 0 {
			p.fallbacks = append(p.fallbacks, targets[i])
		}
	}
	if r.IntN(8) == 0 {
		p.fallbacks = append(p.fallbacks, "zz/not-configured")
	}
	if r.IntN(2) == 0 {
		p.defStrategy = pick(r, propStrategies)
	}
	if r.IntN(2) == 0 {
		p.defMax = r.IntN(5)
	}
	for range r.IntN(3) {
		cs := pick(r, propCodeSets)
		set := map[int]bool{}
		for k := range cs.lo {
			for c := cs.lo[k]; c <= cs.hi[k]; c++ {
				set[c] = true
			}
		}
		p.entries = append(p.entries, propEntry{codes: cs.yaml, set: set, act: propAction{pick(r, propStrategies), r.IntN(5)}})
	}
	if r.IntN(5) < 2 {
		p.onTimeout = &propAction{pick(r, propStrategies), 1 + r.IntN(4)}
	}
	if r.IntN(10) < 3 {
		p.latency = &propLatency{
			thresholdMs: 500 + 100*r.IntN(26),
			measure:     pick(r, []policy.Measure{policy.MeasureTTFB, policy.MeasureTotal}),
			act:         propAction{pick(r, propStrategies), 1 + r.IntN(4)},
			blockS:      1 + r.IntN(30),
			scope:       pick(r, []policy.Scope{policy.ScopeModel, policy.ScopeProvider}),
			applyTo:     pick(r, []policy.ApplyTo{policy.ApplyGlobal, policy.ApplyRequest}),
		}
	}
	if r.IntN(2) == 0 {
		b := &propBackoff{gate: pick(r, []policy.BackoffApply{policy.BackoffSameModel, policy.BackoffSameProvider, policy.BackoffGlobal})}
		if r.IntN(3) > 0 {
			b.baseMs = 10 + r.IntN(991)
		}
		if r.IntN(3) > 0 {
			b.maxMs = max(b.baseMs, 100) + 1 + r.IntN(5000)
		}
		b.jitter = pick(r, []string{"", "true", "false", "none", "equal", "full", "decorrelated"})
		p.backoff = b
	}
	if r.IntN(2) == 0 {
		ra := &propRA{}
		if r.IntN(3) > 0 {
			ra.scope = pick(r, []policy.Scope{policy.ScopeModel, policy.ScopeProvider})
		}
		if r.IntN(3) > 0 {
			ra.applyTo = pick(r, []policy.ApplyTo{policy.ApplyGlobal, policy.ApplyRequest})
		}
		if r.IntN(2) == 0 {
			ra.maxS = 1 + r.IntN(30)
		}
		p.ra = ra
	}
	if r.IntN(10) < 3 {
		p.budgetMs = 500 + r.IntN(20_000)
	}
	return p
}

func (g *propConfig) yaml() string {
	var b strings.Builder
	b.WriteString("model_providers:\n")
	for i, t := range g.targets {
		fmt.Fprintf(&b, "  - model: %s\n", t)
		if d := g.override[i]; d >= 0 {
			fmt.Fprintf(&b, "    timeouts: {attempt: %s}\n", d)
		}
		p := g.policies[i]
		if p == nil {
			continue
		}
		if p.empty() {
			b.WriteString("    retry_policy: {}\n") // a bare key would be null: no policy
			continue
		}
		b.WriteString("    retry_policy:\n")
		if len(p.fallbacks) > 0 {
			fmt.Fprintf(&b, "      fallback_models: [%s]\n", strings.Join(p.fallbacks, ", "))
		}
		if p.defStrategy != "" {
			fmt.Fprintf(&b, "      default_strategy: %s\n", p.defStrategy)
		}
		if p.defMax >= 0 {
			fmt.Fprintf(&b, "      default_max_attempts: %d\n", p.defMax)
		}
		if len(p.entries) > 0 {
			b.WriteString("      on_status_codes:\n")
			for _, en := range p.entries {
				fmt.Fprintf(&b, "        - {codes: %s, strategy: %s, max_attempts: %d}\n", en.codes, en.act.strategy, en.act.max)
			}
		}
		if a := p.onTimeout; a != nil {
			fmt.Fprintf(&b, "      on_timeout: {strategy: %s, max_attempts: %d}\n", a.strategy, a.max)
		}
		if l := p.latency; l != nil {
			fmt.Fprintf(&b, "      on_high_latency: {threshold_ms: %d, measure: %s, min_triggers: 1, strategy: %s, max_attempts: %d, block_duration_seconds: %d, scope: %s, apply_to: %s}\n",
				l.thresholdMs, l.measure, l.act.strategy, l.act.max, l.blockS, l.scope, l.applyTo)
		}
		if bo := p.backoff; bo != nil {
			fmt.Fprintf(&b, "      backoff: {apply_to: %s", bo.gate)
			if bo.baseMs > 0 {
				fmt.Fprintf(&b, ", base_ms: %d", bo.baseMs)
			}
			if bo.maxMs > 0 {
				fmt.Fprintf(&b, ", max_ms: %d", bo.maxMs)
			}
			if bo.jitter != "" {
				fmt.Fprintf(&b, ", jitter: %s", bo.jitter)
			}
			b.WriteString("}\n")
		}
		if ra := p.ra; ra != nil {
			var kv []string
			if ra.scope != "" {
				kv = append(kv, "scope: "+string(ra.scope))
			}
			if ra.applyTo != "" {
				kv = append(kv, "apply_to: "+string(ra.applyTo))
			}
			if ra.maxS > 0 {
				kv = append(kv, "max_retry_after_seconds: "+strconv.Itoa(ra.maxS))
			}
			fmt.Fprintf(&b, "      retry_after_handling: {%s}\n", strings.Join(kv, ", "))
		}
		if p.budgetMs > 0 {
			fmt.Fprintf(&b, "      max_retry_duration_ms: %d\n", p.budgetMs)
		}
	}
	// The retry budget is covered by its own tests; here it would only
	// refuse retries for reasons outside the request.
	b.WriteString("engine:\n  retry_budget: {enabled: false}\n")
	if g.attempt > 0 {
		fmt.Fprintf(&b, "  timeouts: {attempt: %s}\n", g.attempt)
	}
	return b.String()
}

func (p *propPolicy) empty() bool {
	return len(p.fallbacks) == 0 && p.defStrategy == "" && p.defMax < 0 && len(p.entries) == 0 && p.onTimeout == nil &&
		p.latency == nil && p.backoff == nil && p.ra == nil && p.budgetMs == 0
}

// The effective values of a policy, computed from what was written, by
// docs/configuration.md rather than by the policy package.

func (p *propPolicy) def() propAction {
	a := propAction{policy.DifferentProvider, 2}
	if p.defStrategy != "" {
		a.strategy = p.defStrategy
	}
	if p.defMax >= 0 {
		a.max = p.defMax
	}
	return a
}

// resolve is docs/behaviour.md#status-code-resolution: the action of a failure and the key that counts it.
func (p *propPolicy) resolve(class policy.Class, status int) (propAction, string) {
	switch class {
	case policy.Timeout:
		if p.onTimeout != nil {
			return *p.onTimeout, "timeout"
		}
		return p.def(), "timeout"
	case policy.LatencyFailure:
		if p.latency != nil {
			return p.latency.act, "latency"
		}
		return p.def(), "latency"
	}
	for _, en := range p.entries {
		if en.set[status] {
			return en.act, "http_" + strconv.Itoa(status)
		}
	}
	return p.def(), "http_" + strconv.Itoa(status)
}

func (p *propPolicy) raScope() policy.Scope {
	if p.ra != nil && p.ra.scope != "" {
		return p.ra.scope
	}
	return policy.ScopeModel
}

func (p *propPolicy) raGlobal() bool {
	return p.ra == nil || p.ra.applyTo == "" || p.ra.applyTo == policy.ApplyGlobal
}

func (p *propPolicy) raMax() time.Duration {
	if p.ra != nil && p.ra.maxS > 0 {
		return time.Duration(p.ra.maxS) * time.Second
	}
	return 300 * time.Second
}

// backoffRange is docs/behaviour.md#backoff: the range of the backoff delay after the
// overall attempt number attempt failed, whatever the jitter draws.
func (b *propBackoff) backoffRange(attempt int) (lo, hi time.Duration) {
	base, mx := 100*time.Millisecond, 5000*time.Millisecond
	if b.baseMs > 0 {
		base = time.Duration(b.baseMs) * time.Millisecond
	}
	if b.maxMs > 0 {
		mx = time.Duration(b.maxMs) * time.Millisecond
	}
	capped := base
	for k := 1; k < attempt && capped < mx; k++ {
		capped *= 2
	}
	capped = min(capped, mx)
	switch b.jitter {
	case "false", "none":
		return capped, capped
	case "full":
		return 0, capped
	case "decorrelated":
		return min(base, mx), mx
	}
	return capped / 2, capped // equal, the default
}

func (b *propBackoff) gates(c *policy.Compiled, failed, next int) bool {
	switch b.gate {
	case policy.BackoffSameModel:
		return failed == next
	case policy.BackoffSameProvider:
		return c.ProviderOf[failed] == c.ProviderOf[next]
	}
	return true
}

// ---- the random script ----

// propStep is one scripted answer: a status (0 = hang until the attempt's
// context ends, -1 = abandoned by the caller for high latency), an optional
// Retry-After, and the time the answer takes.
type propStep struct {
	status int
	ra     string
	lat    time.Duration
}

func (s propStep) String() string {
	switch {
	case s.status == 0:
		return "hang"
	case s.status < 0:
		return fmt.Sprintf("abandon(%v)", s.lat)
	case s.ra != "":
		return fmt.Sprintf("%d(ra=%s,%v)", s.status, s.ra, s.lat)
	}
	return fmt.Sprintf("%d(%v)", s.status, s.lat)
}

func genPropScript(r *rand.Rand, g *propConfig) map[string][]propStep {
	script := map[string][]propStep{}
	for _, t := range g.targets {
		for range 1 + r.IntN(8) {
			// Latencies are whole milliseconds plus a quarter second and
			// an odd eighth, never a whole second like the timeouts.
			var s propStep
			errLat := time.Duration(0)
			if r.IntN(3) == 0 {
				errLat = time.Duration(r.IntN(8))*250*time.Millisecond + 125*time.Millisecond
			}
			switch w := r.IntN(100); {
			case w < 25:
				s = propStep{status: 200}
			case w < 35:
				s = propStep{status: 200, lat: time.Duration(r.IntN(16))*250*time.Millisecond + 125*time.Millisecond}
			case w < 45:
				s = propStep{status: 429, lat: errLat}
			case w < 60:
				s = propStep{status: 429, ra: strconv.Itoa(r.IntN(21)), lat: errLat}
			case w < 68:
				s = propStep{status: 500, lat: errLat}
			case w < 75:
				s = propStep{status: 503, lat: errLat}
			case w < 80:
				s = propStep{status: 503, ra: strconv.Itoa(r.IntN(21)), lat: errLat}
			case w < 83:
				s = propStep{status: 400, lat: errLat}
			case w < 85:
				s = propStep{status: 302}
			case w < 89:
				s = propStep{status: -1, lat: time.Duration(r.IntN(12))*250*time.Millisecond + 125*time.Millisecond}
			default:
				s = propStep{status: 0}
			}
			script[t] = append(script[t], s)
		}
	}
	return script
}

// propUpstream answers each target's script in order, repeating the last
// step, and records every call with its virtual start and end.
type propUpstream struct {
	mu     sync.Mutex
	script map[string][]propStep
	next   map[string]int
	calls  []propCall
}

type propCall struct {
	target     int
	name       string
	step       propStep
	start, end time.Time
	out        policy.Outcome
}

func (c propCall) String() string {
	return fmt.Sprintf("%s %v @%v..%v", c.name, c.step, c.start.Format("15:04:05.000000"), c.end.Format("15:04:05.000000"))
}

func (u *propUpstream) call(ctx context.Context, a Attempt) policy.Outcome {
	start := time.Now()
	u.mu.Lock()
	steps := u.script[a.Target]
	s := steps[min(u.next[a.Target], len(steps)-1)]
	u.next[a.Target]++
	u.mu.Unlock()

	var o policy.Outcome
	dl, hasDL := ctx.Deadline()
	switch {
	case s.status == 0, hasDL && !start.Add(s.lat).Before(dl):
		// A hang, or an answer the attempt's context cuts: decided from
		// the deadline rather than by racing two timers, so that it is
		// deterministic.
		<-ctx.Done()
		o = policy.Outcome{Err: ctx.Err()}
	case s.status < 0:
		time.Sleep(s.lat)
		o = policy.Outcome{Err: errAbandoned, Total: s.lat}
	default:
		time.Sleep(s.lat)
		o = policy.Outcome{Status: s.status, TTFB: s.lat, Total: s.lat}
		if s.ra != "" {
			o.Header = http.Header{"Retry-After": {s.ra}}
		}
	}
	u.mu.Lock()
	u.calls = append(u.calls, propCall{target: a.Index, name: a.Target, step: s, start: start, end: time.Now(), out: o})
	u.mu.Unlock()
	return o
}

var errAbandoned = fmt.Errorf("too slow, abandoned: %w", policy.ErrHighLatency)

// propRequest is one Do as the test saw it.
type propRequest struct {
	primary       string
	t0, ret       time.Time
	deadline      time.Time
	calls         []propCall
	res           Result
	err           error
	skippedAtZero bool // set by the model: the primary was blocked before the first attempt
}

func (rr *propRequest) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  Do(%s) @%v deadline %v returned @%v: ", rr.primary, rr.t0.Format("15:04:05.000000"), rr.deadline.Format("15:04:05.000000"), rr.ret.Format("15:04:05.000000"))
	if rr.err != nil {
		fmt.Fprintf(&b, "%v", rr.err)
		var ex *ExhaustedError
		if errors.As(rr.err, &ex) {
			fmt.Fprintf(&b, " %+v", *ex)
		}
	} else {
		fmt.Fprintf(&b, "served by %s with %d after %d attempts", rr.res.Target, rr.res.Outcome.Status, rr.res.Attempts)
	}
	for _, c := range rr.calls {
		fmt.Fprintf(&b, "\n    %v", c)
	}
	return b.String()
}

// ---- the model ----

// propFacts are blocks by identifier: the end of the Retry-After and of the
// latency block, 0 = none.
type propFacts struct{ ra, lat []int64 }

func newPropFacts(n int) propFacts { return propFacts{make([]int64, n), make([]int64, n)} }

func (f propFacts) clone() propFacts { return propFacts{slices.Clone(f.ra), slices.Clone(f.lat)} }

func raise(v *int64, until int64) { *v = max(*v, until) }

// propModel knows the blocks every request reported to the engine's shared
// state, and replays requests against docs/behaviour.md#the-request-loop.
type propModel struct {
	g    *propConfig
	c    *policy.Compiled
	glob propFacts
}

func newPropModel(g *propConfig, c *policy.Compiled) *propModel {
	return &propModel{g: g, c: c, glob: newPropFacts(c.NumIDs())}
}

// attemptTimeout is the per-attempt timeout of target t, from what was
// written.
func (m *propModel) attemptTimeout(t int) time.Duration {
	if d := m.g.override[t]; d >= 0 {
		return d
	}
	return m.g.attempt
}

// check replays one request and returns what the engine did that
// docs/behaviour.md#the-request-loop does not allow. It updates the model's shared facts from the
// request's outcomes.
func (m *propModel) check(rr *propRequest) (problems []string) {
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	c := m.c
	p, ok := c.Lookup(rr.primary)
	if !ok {
		return []string{"unknown primary " + rr.primary}
	}
	pol := m.g.policies[p]
	calls := rr.calls
	D := rr.deadline.UnixNano()
	t0 := rr.t0.UnixNano()
	var ex *ExhaustedError
	errors.As(rr.err, &ex)

	// expectEnd checks that the request ended after i calls with one of
	// the reasons.
	expectEnd := func(i int, reasons ...Reason) {
		if len(calls) != i {
			bad("made %d calls, want the request to end after %d with %v", len(calls), i, reasons)
			return
		}
		if ex == nil {
			bad("returned %v / %+v, want an *ExhaustedError with a reason in %v", rr.err, rr.res, reasons)
			return
		}
		if !slices.Contains(reasons, ex.Reason) {
			bad("reason %s, want one of %v", ex.Reason, reasons)
		}
		if ex.BudgetExhausted != (ex.Reason == ReasonBudget) {
			bad("BudgetExhausted %v with reason %s", ex.BudgetExhausted, ex.Reason)
		}
	}
	expectResult := func(i int, class policy.Class) {
		call := calls[i-1]
		if len(calls) != i {
			bad("made %d calls, want the request to end with call %d's answer", len(calls), i)
		}
		if rr.err != nil || rr.res.Target != call.name || rr.res.Attempts != i || rr.res.Class != class || rr.res.Outcome.Status != call.out.Status {
			bad("returned %v / %+v, want %s's %d (%s) after %d attempts", rr.err, rr.res, call.name, call.out.Status, class, i)
		}
	}

	if pol == nil {
		// Without a retry_policy: one attempt, returned as it is.
		if len(calls) == 0 || calls[0].target != p || !calls[0].start.Equal(rr.t0) {
			bad("without a retry_policy the primary must be called at once, calls %v", calls)
			return problems
		}
		// Even when the request's deadline cut it: the outcome is the
		// deadline's error, delivered like any other.
		expectResult(1, policy.PassThrough)
		return problems
	}

	local := newPropFacts(c.NumIDs())
	knownAt := func(f propFacts, t int, now int64) (until int64, latency bool) {
		for _, id := range [2]int{t, c.ProviderID(t)} {
			until = max(until, f.ra[id], f.lat[id])
			latency = latency || f.lat[id] > now
		}
		return until, latency
	}
	status := func(t int, now int64) (int64, bool) {
		u1, l1 := knownAt(m.glob, t, now)
		u2, l2 := knownAt(local, t, now)
		return max(u1, u2), l1 || l2
	}

	attempted := make([]bool, c.NumTargets())
	moved := false
	counts := map[string]int{}
	budget := time.Duration(pol.budgetMs) * time.Millisecond
	var budget0 int64
	haveBudget0 := false
	var shortest, maxRA time.Duration
	var failed []FailedAttempt
	now := t0
	i := 0 // calls replayed

	skip := func(rem int64) {
		if shortest == 0 || time.Duration(rem) < shortest {
			shortest = time.Duration(rem)
		}
	}
	match := func(t int, s policy.Strategy) bool {
		return (c.ProviderOf[t] == c.ProviderOf[p]) == (s == policy.SameProvider)
	}
	// waitRange is the range of the wait before an attempt to next after
	// failed, attempts attempts into the request, rem the remaining
	// Retry-After the wait must cover.
	waitRange := func(failed, next, attempts int, rem int64) (lo, hi int64) {
		lo, hi = rem, rem
		if bo := pol.backoff; bo != nil && attempts > 0 && bo.gates(c, failed, next) {
			dlo, dhi := bo.backoffRange(attempts)
			lo, hi = max(lo, int64(dlo)), max(hi, int64(dhi))
		}
		return lo, hi
	}

	// decide is docs/behaviour.md#the-request-loop after a failure of target failed resolved to
	// strategy s: it checks what the engine did next against what may
	// happen and reports whether the replay goes on with calls[i].
	decide := func(s policy.Strategy, failed, attempts int) bool {
		var reasons []Reason // how the request may end here
		var allowed []int
		var rem int64
		if budget > 0 {
			if !haveBudget0 {
				budget0, haveBudget0 = now, true
			}
			if now-budget0 >= int64(budget) {
				reasons = []Reason{ReasonBudget}
			}
		}
		if reasons == nil {
			if s == policy.SameModel {
				u, lat := status(p, now)
				switch {
				case moved:
					reasons = []Reason{ReasonMaxAttempts}
				case u > now && lat:
					skip(u - now)
					reasons = []Reason{ReasonProviders}
				case u > now:
					skip(u - now)
					rem = u - now
					allowed = []int{p}
				default:
					allowed = []int{p}
				}
			} else {
				for _, name := range pol.fallbacks {
					fb, ok := c.Lookup(name)
					if !ok || attempted[fb] || !match(fb, s) {
						continue
					}
					if u, _ := status(fb, now); u > now {
						skip(u - now)
						continue
					}
					allowed = []int{fb}
					break
				}
				if allowed == nil {
					for t := range c.NumTargets() {
						if attempted[t] || !match(t, s) {
							continue
						}
						if u, _ := status(t, now); u > now {
							skip(u - now)
							continue
						}
						allowed = append(allowed, t)
					}
				}
				if allowed == nil {
					reasons = []Reason{ReasonProviders}
				}
			}
		}
		mustEnd := reasons != nil
		if !mustEnd {
			// The wait may be random: the request may end for the budget
			// or the deadline with some draws and not with others.
			mustEnd = true
			for _, t := range allowed {
				lo, hi := waitRange(failed, t, attempts, rem)
				endsLo := (budget > 0 && now+lo > budget0+int64(budget)) || now+lo >= D
				if !endsLo {
					mustEnd = false
				}
				if budget > 0 && now+hi > budget0+int64(budget) && !slices.Contains(reasons, ReasonBudget) {
					reasons = append(reasons, ReasonBudget)
				}
				if now+hi >= D && !slices.Contains(reasons, ReasonDeadline) {
					reasons = append(reasons, ReasonDeadline)
				}
			}
		}
		if i == len(calls) {
			if len(reasons) == 0 {
				bad("the request ended after %d calls (%v), but strategy %s allows %v with a wait within the budget and the deadline", i, rr.err, s, allowed)
				return false
			}
			expectEnd(i, reasons...)
			return false
		}
		next := calls[i]
		if mustEnd {
			bad("call %d to %s: the request had to end (%v)", i+1, next.name, reasons)
			return false
		}
		if !slices.Contains(allowed, next.target) {
			bad("call %d went to %s; strategy %s after %s allows %v", i+1, next.name, s, c.Targets[failed], names(c, allowed))
		}
		lo, hi := waitRange(failed, next.target, attempts, rem)
		if w := next.start.UnixNano() - now; w < lo || w > hi {
			bad("call %d to %s waited %v, want within [%v, %v]", i+1, next.name, time.Duration(w), time.Duration(lo), time.Duration(hi))
		}
		return true
	}

	// Start: the check of docs/behaviour.md#before-the-first-attempt before the first attempt.
	if u, _ := status(p, t0); u > t0 {
		rr.skippedAtZero = true
		skip(u - t0)
		attempted[p] = true
		if !decide(pol.def().strategy, p, 0) {
			m.finish(rr, ex, failed, maxRA, shortest, bad)
			return problems
		}
	} else if len(calls) == 0 || calls[0].target != p || calls[0].start.UnixNano() != t0 {
		bad("the unblocked primary must be called at once, calls %v", calls)
		return problems
	}

	for {
		call := calls[i]
		i++
		attempted[call.target] = true
		if call.target != p {
			moved = true
		}
		now = call.end.UnixNano()
		elapsed := call.end.Sub(call.start)
		measured := m.attemptTimeout(call.target) > 0 || pol.latency != nil
		timeoutRec := func() FailedAttempt {
			fa := FailedAttempt{Target: call.name, Number: i, Class: policy.Timeout}
			if measured {
				fa.Latency = elapsed
			}
			if pol.latency != nil {
				fa.Threshold = time.Duration(pol.latency.thresholdMs) * time.Millisecond
			}
			return fa
		}

		if call.out.Err != nil && now >= D {
			// Cut by the request's deadline: recorded as a timeout, not
			// classified, so without the latency threshold.
			fa := timeoutRec()
			fa.Threshold = 0
			failed = append(failed, fa)
			expectEnd(i, ReasonDeadline)
			break
		}
		var class policy.Class
		event := false
		switch o := call.out; {
		case errors.Is(o.Err, policy.ErrHighLatency):
			// The caller gave up for latency: always an event.
			class = policy.LatencyFailure
			event = pol.latency != nil
		case o.Err != nil:
			class = policy.Timeout
			event = pol.latency != nil && elapsed > time.Duration(pol.latency.thresholdMs)*time.Millisecond
		case o.Status >= 200 && o.Status < 300:
			class = policy.Success
			if pol.latency != nil && o.TTFB > time.Duration(pol.latency.thresholdMs)*time.Millisecond {
				class, event = policy.SlowSuccess, true
			}
		case o.Status >= 400 && o.Status < 600:
			class = policy.HTTPError
		default:
			class = policy.PassThrough
		}
		if event {
			l := pol.latency
			id := c.ID(call.target, l.scope)
			until := now + int64(time.Duration(l.blockS)*time.Second)
			raise(&local.lat[id], until)
			if l.applyTo == policy.ApplyGlobal {
				raise(&m.glob.lat[id], until)
			}
		}
		if !class.Retriable() {
			expectResult(i, class)
			break
		}
		fa := FailedAttempt{Target: call.name, Number: i, Status: call.out.Status, Class: class}
		if class == policy.HTTPError {
			fa.Latency = call.out.Total // how long the failed answer took
			if call.step.ra != "" {
				s, _ := strconv.Atoi(call.step.ra)
				d := min(time.Duration(s)*time.Second, pol.raMax())
				fa.RetryAfter = d
				maxRA = max(maxRA, d)
				if d > 0 {
					id := c.ID(call.target, pol.raScope())
					raise(&local.ra[id], now+int64(d))
					if pol.raGlobal() {
						raise(&m.glob.ra[id], now+int64(d))
					}
				}
			}
		} else if class == policy.LatencyFailure {
			fa = FailedAttempt{Target: call.name, Number: i, Class: class, Latency: call.out.Total}
			if pol.latency != nil {
				fa.Threshold = time.Duration(pol.latency.thresholdMs) * time.Millisecond
			}
		} else {
			fa = timeoutRec()
		}
		failed = append(failed, fa)
		act, key := pol.resolve(class, call.out.Status)
		counts[key]++
		if counts[key] >= act.limit() {
			expectEnd(i, ReasonMaxAttempts)
			break
		}
		if !decide(act.strategy, call.target, i) {
			break
		}
	}
	m.finish(rr, ex, failed, maxRA, shortest, bad)
	return problems
}

// finish compares the exhaustion error with the failures the model
// recorded.
func (m *propModel) finish(rr *propRequest, ex *ExhaustedError, failed []FailedAttempt, maxRA, shortest time.Duration, bad func(string, ...any)) {
	if ex == nil {
		return
	}
	if len(ex.Attempts) != len(failed) {
		bad("the error lists %d attempts, want %d", len(ex.Attempts), len(failed))
		return
	}
	for k, want := range failed {
		got := ex.Attempts[k]
		got.Err = nil
		if got != want || got.ErrorType() != want.ErrorType() {
			bad("attempt %d listed as %+v (%s), want %+v (%s)", k+1, got, got.ErrorType(), want, want.ErrorType())
		}
	}
	if ex.MaxRetryAfter != maxRA {
		bad("MaxRetryAfter %v, want %v", ex.MaxRetryAfter, maxRA)
	}
	if ex.ShortestBlock != shortest {
		bad("ShortestBlock %v, want %v", ex.ShortestBlock, shortest)
	}
	if ex.Model != rr.primary {
		bad("Model %s, want %s", ex.Model, rr.primary)
	}
}

// propCounts checks that the engine's per-target counts grew by what the
// request did: an attempt per call, a success for the call whose answer
// was delivered, a failure for every other. counts holds the counts before
// the request and is updated.
func propCounts(e *Engine, rr *propRequest, counts []Counts) (problems []string) {
	for t, name := range e.Compiled().Targets {
		var want Counts
		for _, call := range rr.calls {
			if call.target == t {
				want.Attempts++
				want.Failures++
			}
		}
		if rr.err == nil && rr.res.Target == name {
			want.Failures--
			want.Successes++
		}
		now := e.Counts(name)
		got := Counts{now.Attempts - counts[t].Attempts, now.Successes - counts[t].Successes, now.Failures - counts[t].Failures}
		if got != want {
			problems = append(problems, fmt.Sprintf("counts of %s grew by %+v, want %+v", name, got, want))
		}
		counts[t] = now
	}
	return problems
}

func names(c *policy.Compiled, ts []int) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = c.Targets[t]
	}
	return out
}

// propInvariants checks properties (a)–(e) directly on what happened;
// glob holds the global blocks the engine knew when the request began.
func propInvariants(g *propConfig, c *policy.Compiled, rr *propRequest, glob propFacts) (problems []string) {
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	p, _ := c.Lookup(rr.primary)
	pol := g.policies[p]

	// (d) exactly one of Result and error; Attempts is the calls made.
	if (rr.err == nil) == (rr.res.Target == "") {
		bad("(d) Do returned both or neither: %+v, %v", rr.res, rr.err)
	}
	if rr.err == nil && rr.res.Attempts != len(rr.calls) {
		bad("(d) Result.Attempts %d, %d calls made", rr.res.Attempts, len(rr.calls))
	}

	// (a) never an attempt to a target under a block the engine knows of:
	// the global ones from before, and every one this request's earlier
	// attempts created (global or request-scoped).
	if pol != nil {
		f := glob.clone()
		for k, call := range rr.calls {
			now := call.start.UnixNano()
			for _, id := range [2]int{call.target, c.ProviderID(call.target)} {
				if u := max(f.ra[id], f.lat[id]); u > now {
					bad("(a) call %d to %s at %v while %s is blocked until %v", k+1, call.name, call.start, c.IDName(id), time.Unix(0, u))
				}
			}
			end := call.end.UnixNano()
			if call.out.Err == nil && call.out.Status >= 400 && call.step.ra != "" {
				s, _ := strconv.Atoi(call.step.ra)
				if d := min(time.Duration(s)*time.Second, pol.raMax()); d > 0 {
					raise(&f.ra[c.ID(call.target, pol.raScope())], end+int64(d))
				}
			}
			if l := pol.latency; l != nil && (call.out.Err != nil || (call.out.Status >= 200 && call.out.Status < 300)) {
				measured := call.out.TTFB
				if call.out.Err != nil {
					measured = call.end.Sub(call.start)
				}
				if measured > time.Duration(l.thresholdMs)*time.Millisecond || errors.Is(call.out.Err, policy.ErrHighLatency) {
					raise(&f.lat[c.ID(call.target, l.scope)], end+int64(time.Duration(l.blockS)*time.Second))
				}
			}
		}
	}

	// (b) failures per key within max_attempts; one attempt without a
	// policy.
	if pol == nil {
		if len(rr.calls) != 1 {
			bad("(b) %d attempts without a retry_policy, want 1", len(rr.calls))
		}
	} else {
		fails := map[string]int{}
		limits := map[string]int{}
		for _, call := range rr.calls {
			class := policy.Timeout
			if errors.Is(call.out.Err, policy.ErrHighLatency) {
				class = policy.LatencyFailure
			} else if call.out.Err == nil {
				if call.out.Status < 400 {
					continue
				}
				class = policy.HTTPError
			}
			act, key := pol.resolve(class, call.out.Status)
			fails[key]++
			limits[key] = act.limit()
		}
		sum := 0
		for key, n := range fails {
			if n > limits[key] {
				bad("(b) %d failures of %s, max_attempts %d", n, key, limits[key])
			}
			sum += limits[key]
		}
		if len(rr.calls) > sum+1 {
			bad("(b) %d attempts, more than the %d the keys in play allow", len(rr.calls), sum+1)
		}
	}

	// (c) the time budget and the deadline.
	if pol != nil && pol.budgetMs > 0 && len(rr.calls) > 0 {
		budget := time.Duration(pol.budgetMs) * time.Millisecond
		first := rr.t0 // the primary was skipped: the budget starts at once
		if !rr.skippedAtZero {
			first = rr.calls[0].end
		}
		var waited time.Duration
		for k := 1; k < len(rr.calls); k++ {
			waited += rr.calls[k].start.Sub(rr.calls[k-1].end)
		}
		last := rr.calls[len(rr.calls)-1].start
		if (len(rr.calls) > 1 || rr.skippedAtZero) && last.Sub(first) > budget {
			bad("(c) the last attempt started %v after the first failure, budget %v", last.Sub(first), budget)
		}
		if waited > budget {
			bad("(c) waited %v in all, budget %v", waited, budget)
		}
	}
	for k, call := range rr.calls {
		if !call.start.Before(rr.deadline) {
			bad("(c) call %d started at the deadline or after it", k+1)
		}
	}
	if rr.ret.After(rr.deadline) {
		bad("(c) Do returned %v after the deadline", rr.ret.Sub(rr.deadline))
	}

	// (e) the exhaustion lists the failed attempts in order, numbered
	// 1..n.
	var ex *ExhaustedError
	if errors.As(rr.err, &ex) {
		if len(ex.Attempts) != len(rr.calls) {
			bad("(e) %d attempts listed, %d calls made", len(ex.Attempts), len(rr.calls))
		}
		for k, a := range ex.Attempts {
			if a.Number != k+1 {
				bad("(e) attempt %d numbered %d", k+1, a.Number)
			}
			if k < len(rr.calls) && a.Target != rr.calls[k].name {
				bad("(e) attempt %d listed for %s, called %s", k+1, a.Target, rr.calls[k].name)
			}
		}
	}
	return problems
}
