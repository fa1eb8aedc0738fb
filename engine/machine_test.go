package engine

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

// testEnv builds the environment a Machine runs in without an Engine: a
// synchronous health state, a seeded random source, one shard, no
// budget unless the configuration enables one, and a clock that says 0
// (the machines below run in virtual time).
func testEnv(t testing.TB, y string) (*env, *health.State) {
	t.Helper()
	cfg := mustConfig(t, y)
	c := cfg.Compiled()
	st := health.NewState(c)
	v := &env{
		c:           c,
		health:      SyncHealth(st),
		rnd:         rand.NewPCG(1, 2),
		log:         zap.NewNop(),
		maxRetrying: int64(*cfg.Engine.MaxRetryingRequests),
		retrying:    new(atomic.Int64),
		budget:      newRetryBudget(cfg.Engine.RetryBudget, 0),
		now:         func() int64 { return 0 },
		shards:      make([]shard, 1),
	}
	v.shards[0].counts = newCounts(c.NumTargets())
	v.passiveHealth(c)
	return v, st
}

// machine begins a request for model at virtual time now.
func (v *env) machine(t testing.TB, model string, now int64) *Machine {
	t.Helper()
	i, ok := v.c.Lookup(model)
	if !ok {
		t.Fatalf("unknown model %s", model)
	}
	m := &Machine{}
	m.SetNow(now)
	m.begin(v, &v.shards[0], i)
	return m
}

// input is one thing a driver hands a Machine.
type input struct {
	at        time.Duration // virtual time of the input
	start     bool
	observe   *policy.Outcome
	cut       error
	interrupt error
}

// want is the step expected back.
type want struct {
	kind     StepKind
	target   string        // StepAttempt
	wait     time.Duration // StepAttempt
	reason   Reason        // StepFail
	attempts int           // StepFail: failed attempts listed
	cause    error         // StepAbort
}

func out(status int) *policy.Outcome { return &policy.Outcome{Status: status} }

func retryAfter(status int, secs string) *policy.Outcome {
	return &policy.Outcome{Status: status, Header: http.Header{"Retry-After": {secs}}}
}

const (
	machineCfg = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      default_strategy: different_provider
      default_max_attempts: 3
      on_status_codes:
        - {codes: [429], strategy: same_model, max_attempts: 3}
  - model: openai/gpt-4o-mini
  - model: anthropic/claude-3-5-sonnet
  - model: plain/model
engine: {retry_budget: {enabled: false}}
`
	backoffCfg = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      default_strategy: same_model
      default_max_attempts: 3
      backoff: {apply_to: same_model, base_ms: 1000, max_ms: 4000, jitter: none}
engine: {retry_budget: {enabled: false}}
`
)

// The Machine's steps, driven directly: every per-request decision,
// including the deadline, cancellation and cut paths Do and the simulator
// share.
func TestMachineSteps(t *testing.T) {
	s := time.Second
	tests := []struct {
		name   string
		cfg    string
		model  string
		inputs []input
		wants  []want
	}{
		{"success at once", machineCfg, gpt,
			[]input{{start: true}, {observe: out(200)}},
			[]want{{kind: StepAttempt, target: gpt}, {kind: StepDone}}},
		{"503 fails over to the fallback", machineCfg, gpt,
			[]input{{start: true}, {observe: out(503)}, {observe: out(200)}},
			[]want{{kind: StepAttempt, target: gpt}, {kind: StepAttempt, target: claude}, {kind: StepDone}}},
		{"429 with Retry-After waits it out on the same model", machineCfg, gpt,
			[]input{{start: true}, {observe: retryAfter(429, "2")}},
			[]want{{kind: StepAttempt, target: gpt}, {kind: StepAttempt, target: gpt, wait: 2 * s}}},
		{"x-should-retry false rules out the provider, not the failover", machineCfg, gpt,
			[]input{{start: true}, {observe: &policy.Outcome{Status: 429, NoSameProvider: true}}},
			[]want{{kind: StepAttempt, target: gpt}, {kind: StepFail, reason: ReasonMaxAttempts, attempts: 1}}},
		{"x-should-retry false on a 503 goes to the other provider", machineCfg, gpt,
			[]input{{start: true}, {observe: &policy.Outcome{Status: 503, NoSameProvider: true}}},
			[]want{{kind: StepAttempt, target: gpt}, {kind: StepAttempt, target: claude}}},
		{"deadline during a wait exhausts with reason deadline", backoffCfg, gpt,
			[]input{{start: true}, {observe: out(503)}, {at: 500 * time.Millisecond, interrupt: context.DeadlineExceeded}},
			[]want{{kind: StepAttempt, target: gpt}, {kind: StepAttempt, target: gpt, wait: s}, {kind: StepFail, reason: ReasonDeadline, attempts: 1}}},
		{"deadline before the first attempt exhausts with no attempt", backoffCfg, gpt,
			[]input{{start: true}, {interrupt: context.DeadlineExceeded}},
			[]want{{kind: StepAttempt, target: gpt}, {kind: StepFail, reason: ReasonDeadline, attempts: 0}}},
		{"cancellation during a wait aborts with the context's error", backoffCfg, gpt,
			[]input{{start: true}, {observe: out(503)}, {interrupt: context.Canceled}},
			[]want{{kind: StepAttempt, target: gpt}, {kind: StepAttempt, target: gpt, wait: s}, {kind: StepAbort, cause: context.Canceled}}},
		{"Close during a wait aborts with ErrClosed", backoffCfg, gpt,
			[]input{{start: true}, {observe: out(503)}, {interrupt: ErrClosed}},
			[]want{{kind: StepAttempt, target: gpt}, {kind: StepAttempt, target: gpt, wait: s}, {kind: StepAbort, cause: ErrClosed}}},
		{"an attempt cut by the deadline is listed and exhausts", machineCfg, gpt,
			[]input{{start: true}, {observe: out(503)}, {at: 3 * s, cut: context.DeadlineExceeded}},
			[]want{{kind: StepAttempt, target: gpt}, {kind: StepAttempt, target: claude}, {kind: StepFail, reason: ReasonDeadline, attempts: 2}}},
		{"an attempt cut by cancellation aborts", machineCfg, gpt,
			[]input{{start: true}, {cut: context.Canceled}},
			[]want{{kind: StepAttempt, target: gpt}, {kind: StepAbort, cause: context.Canceled}}},
		{"without a policy a cut attempt is delivered as it is", machineCfg, "plain/model",
			[]input{{start: true}, {cut: context.DeadlineExceeded}},
			[]want{{kind: StepAttempt, target: "plain/model"}, {kind: StepDone}}},
		{"without a policy a 503 is delivered", machineCfg, "plain/model",
			[]input{{start: true}, {observe: out(503)}},
			[]want{{kind: StepAttempt, target: "plain/model"}, {kind: StepDone}}},
		{"max_attempts ends the same-model retries", machineCfg, gpt,
			[]input{{start: true}, {observe: out(429)}, {observe: out(429)}, {observe: out(429)}},
			[]want{{kind: StepAttempt, target: gpt}, {kind: StepAttempt, target: gpt}, {kind: StepAttempt, target: gpt}, {kind: StepFail, reason: ReasonMaxAttempts, attempts: 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := testEnv(t, tt.cfg)
			m := v.machine(t, tt.model, 0)
			m.SetDeadline(int64(10 * s))
			defer m.Finish()
			for i, in := range tt.inputs {
				m.SetNow(int64(in.at))
				var st Step
				switch {
				case in.start:
					st = m.Start()
				case in.observe != nil:
					st = m.Observe(in.observe)
				case in.cut != nil:
					st = m.Cut(&policy.Outcome{}, in.cut)
				default:
					st = m.Interrupt(in.interrupt)
				}
				checkStep(t, i, v, m, st, tt.wants[i])
			}
		})
	}
}

func checkStep(t *testing.T, i int, v *env, m *Machine, st Step, w want) {
	t.Helper()
	if st.Kind != w.kind {
		t.Fatalf("step %d: kind %d, want %d (%+v)", i, st.Kind, w.kind, st)
	}
	switch st.Kind {
	case StepAttempt:
		if got := v.c.Targets[st.Target]; got != w.target || st.Wait != w.wait {
			t.Fatalf("step %d: attempt %s after %v, want %s after %v", i, got, st.Wait, w.target, w.wait)
		}
	case StepFail:
		if st.Err.Reason != w.reason || len(st.Err.Attempts) != w.attempts {
			t.Fatalf("step %d: exhausted %s with %d attempts, want %s with %d", i, st.Err.Reason, len(st.Err.Attempts), w.reason, w.attempts)
		}
	case StepAbort:
		if !errors.Is(m.Cause(), w.cause) {
			t.Fatalf("step %d: abort %v, want %v", i, m.Cause(), w.cause)
		}
	}
}

// A deadline that strikes before any attempt renders as a 504, not as the
// 503 of "everything was blocked".
func TestDeadlineWithoutAttemptsIs504(t *testing.T) {
	ex := &ExhaustedError{Model: gpt, Reason: ReasonDeadline}
	if ex.Status() != http.StatusGatewayTimeout || !errors.Is(ex, context.DeadlineExceeded) {
		t.Fatalf("status %d, Is(DeadlineExceeded) %v", ex.Status(), errors.Is(ex, context.DeadlineExceeded))
	}
}

// The counts a Machine keeps: an attempt interrupted before it was made is
// not counted; a cut one counts as a failure.
func TestMachineCounts(t *testing.T) {
	v, _ := testEnv(t, backoffCfg)
	m := v.machine(t, gpt, 0)
	m.Start()
	m.Observe(out(503))    // attempt 1 failed; attempt 2 decided after 1 s
	m.Interrupt(ErrClosed) // never made
	m2 := v.machine(t, gpt, 0)
	m2.Start()
	m2.Cut(&policy.Outcome{}, context.DeadlineExceeded)
	s := &v.shards[0]
	got := Counts{s.counts[countSuccesses].Load() + s.counts[countFailures].Load(), s.counts[countSuccesses].Load(), s.counts[countFailures].Load()}
	if want := (Counts{Attempts: 2, Failures: 2}); got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
}

// recordingHealth hands out numbered views and records which view each
// lookup read: a decision must read the one view it took.
type recordingHealth struct {
	gen   int
	reads []int
}

type recordingView struct {
	h   *recordingHealth
	gen int
}

func (h *recordingHealth) View() View                       { h.gen++; return recordingView{h, h.gen} }
func (h *recordingHealth) ReportRetryAfter(int, int64) bool { return true }
func (h *recordingHealth) ReportLatency(int, int64, int, time.Duration, time.Duration) bool {
	return true
}
func (h *recordingHealth) ReportFailure(int, int64) bool { return true }
func (h *recordingHealth) ReportSuccess(int, int64) bool { return true }
func (v recordingView) Claim(int, int64, int64) bool     { return false }
func (v recordingView) Release(int, int64)               {}
func (v recordingView) Attention(int) bool               { return false }
func (v recordingView) Lookup(int, int64) health.Status {
	v.h.reads = append(v.h.reads, v.gen)
	return health.Status{}
}
func (v recordingView) Clear(int) bool { v.h.reads = append(v.h.reads, v.gen); return false }

// The random pick reads every candidate twice (count, then take the k-th):
// both passes must read one view, so that a block published between them
// cannot make the second pass miss the target the first one counted.
func TestDecisionReadsOneView(t *testing.T) {
	v, _ := testEnv(t, `
model_providers:
  - model: p0/m
    retry_policy: {default_strategy: different_provider, default_max_attempts: 2}
  - model: p1/a
  - model: p1/b
  - model: p1/c
engine: {retry_budget: {enabled: false}}
`)
	rh := &recordingHealth{}
	v.health = rh
	m := v.machine(t, "p0/m", 0)
	m.Start()
	rh.reads = rh.reads[:0]
	gen := rh.gen
	st := m.Observe(out(503))
	if st.Kind != StepAttempt {
		t.Fatalf("step %+v", st)
	}
	if len(rh.reads) < 6 {
		t.Fatalf("%d reads: the pick should have read each of 3 candidates twice", len(rh.reads))
	}
	for _, g := range rh.reads {
		if g != gen+1 {
			t.Fatalf("reads of views %v: a decision read more than one view", rh.reads)
		}
	}
}

// A failing request's own facts are sized by what it touches, not by the
// configuration: with 5,001 targets a request failing with Retry-After on
// two of them allocates its error, the second of its facts (one fits in
// the Machine) and the Machine the closure makes, a few hundred bytes.
func TestFailingRequestMemoryIndependentOfTargets(t *testing.T) {
	y := "model_providers:\n  - model: p0/m0\n    retry_policy: {fallback_models: [p1/m1], default_strategy: different_provider, default_max_attempts: 2, retry_after_handling: {apply_to: request}}\n"
	for i := 1; i <= 5000; i++ {
		y += "  - model: p" + itoa(i) + "/m" + itoa(i) + "\n"
	}
	y += "engine: {retry_budget: {enabled: false}}\n"
	v, _ := testEnv(t, y)
	ra := retryAfter(429, "30")
	run := func() {
		m := v.machine(t, "p0/m0", 0)
		m.Start()
		m.Observe(ra)
		if st := m.Observe(ra); st.Kind != StepFail {
			t.Fatalf("step %+v", st)
		}
	}
	if allocs := testing.AllocsPerRun(50, run); allocs > 4 {
		t.Fatalf("%v allocations per failing request, want ≤ 4", allocs)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		run()
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 100; per > 4096 {
		t.Fatalf("%d bytes per failing request, want a few hundred (the configuration has 5,001 targets)", per)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// The simulator drives a Machine in virtual time, which may start at 0:
// the time budget must still start at the first failure.
func TestMachineVirtualTimeBudgetFromZero(t *testing.T) {
	cfg := mustConfig(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      default_strategy: same_model
      default_max_attempts: 10
      max_retry_duration_ms: 1000
`)
	e, err := New(cfg, WithHealth(SyncHealth(health.NewState(cfg.Compiled()))), WithSeed(1))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var m Machine
	m.SetNow(0)
	if err := e.Begin(&m, gpt); err != nil {
		t.Fatal(err)
	}
	defer m.Finish()
	st := m.Start()
	for now := int64(0); st.Kind == StepAttempt; now += int64(600 * time.Millisecond) {
		m.SetNow(now)
		st = m.Observe(&policy.Outcome{Status: 503})
	}
	if st.Kind != StepFail || st.Err.Reason != ReasonBudget || !st.Err.BudgetExhausted {
		t.Fatalf("step = %+v, want exhaustion of the time budget", st)
	}
	if n := len(st.Err.Attempts); n != 3 {
		t.Errorf("attempts = %d, want 3 (failures at 0, 0.6 s and 1.2 s; the budget ends at 1 s)", n)
	}
}

// unlisted_failover decides what the random pick may choose once the
// fallbacks are used up: any configured target (the default), the same
// model at another provider, or nothing.
func TestMachineUnlistedFailover(t *testing.T) {
	cfg := func(mode string) string {
		return `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {default_strategy: different_provider, default_max_attempts: 5` + mode + `}
  - model: azure/gpt-4o
  - model: mistral/mistral-embed
engine: {retry_budget: {enabled: false}}
`
	}
	for _, tt := range []struct {
		mode string
		want []string // the targets the random pick chooses, in turn
	}{
		{", unlisted_failover: same_model", []string{"azure/gpt-4o"}},
		{", unlisted_failover: none", nil},
	} {
		v, _ := testEnv(t, cfg(tt.mode))
		m := v.machine(t, gpt, 0)
		m.Start()
		var got []string
		st := m.Observe(out(503))
		for st.Kind == StepAttempt {
			got = append(got, v.c.Targets[st.Target])
			st = m.Observe(out(503))
		}
		if !slices.Equal(got, tt.want) || st.Kind != StepFail || st.Err.Reason != ReasonProviders {
			t.Errorf("%s: picked %v then %+v, want %v then providers_exhausted", tt.mode, got, st, tt.want)
		}
	}
	// any: both are candidates.
	v, _ := testEnv(t, cfg(""))
	seen := map[string]bool{}
	for range 50 {
		m := v.machine(t, gpt, 0)
		m.Start()
		if st := m.Observe(out(503)); st.Kind == StepAttempt {
			seen[v.c.Targets[st.Target]] = true
		}
	}
	if !seen["azure/gpt-4o"] || !seen["mistral/mistral-embed"] {
		t.Errorf("any picked only %v", seen)
	}
}

// same_model_patience_ms: a same-model retry waits out a short
// Retry-After of the target it retries; a long one, one past the deadline,
// or a patience of 0 fails over at once.
func TestMachineSameModelPatience(t *testing.T) {
	cfg := func(extra string) string {
		return `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      default_strategy: different_provider
      default_max_attempts: 4
      same_model_retries: 2` + extra + `
  - model: anthropic/claude-3-5-sonnet
engine: {retry_budget: {enabled: false}, passive_health: {enabled: false}}
`
	}
	for _, tt := range []struct {
		name, extra, retryAfter string
		deadline                time.Duration
		target                  string
		wait                    time.Duration
	}{
		{"2 s hint: waited out on the same target", "", "2", 0, gpt, 2 * time.Second},
		{"10 s hint: fails over at once", "", "10", 0, claude, 0},
		{"2 s hint past the deadline: fails over", "", "2", time.Second, claude, 0},
		{"patience 0: fails over", "\n      same_model_patience_ms: 0", "2", 0, claude, 0},
		{"patience 15 s: a 10 s hint is waited out", "\n      same_model_patience_ms: 15000", "10", 0, gpt, 10 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := testEnv(t, cfg(tt.extra))
			m := v.machine(t, gpt, 0)
			if tt.deadline > 0 {
				m.SetDeadline(int64(tt.deadline))
			}
			m.Start()
			st := m.Observe(retryAfter(429, tt.retryAfter))
			if st.Kind != StepAttempt || v.c.Targets[st.Target] != tt.target || st.Wait != tt.wait {
				t.Fatalf("step %+v (target %s), want %s after %v", st, v.c.Targets[st.Target], tt.target, tt.wait)
			}
		})
	}
}

// same_model_retries by classification: a timeout gets no same-target
// retry and a transport error one, unless on_timeout says otherwise; an
// on_status_codes entry's own value wins over the policy's.
func TestMachineSameRetriesByClass(t *testing.T) {
	cfg := func(timeout, entry string) string {
		return `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      default_strategy: different_provider
      default_max_attempts: 6
      same_model_retries: 2
      on_timeout: {strategy: different_provider, max_attempts: 6` + timeout + `}
      on_status_codes:
        - {codes: [503], strategy: different_provider, max_attempts: 6` + entry + `}
  - model: anthropic/claude-3-5-sonnet
engine: {retry_budget: {enabled: false}, passive_health: {enabled: false}}
`
	}
	timedOut := &policy.Outcome{Err: context.DeadlineExceeded}
	reset := &policy.Outcome{Err: errors.New("connection reset by peer")}
	for _, tt := range []struct {
		name, timeout, entry string
		fail                 *policy.Outcome
		sameAttempts         int // attempts to gpt before the failover
	}{
		{"a timeout: no same-target retry", "", "", timedOut, 1},
		{"a transport error: one", "", "", reset, 2},
		{"on_timeout same_model_retries 2: a timeout gets two", ", same_model_retries: 2", "", timedOut, 3},
		{"a 500 inherits the policy's 2", "", "", out(500), 3},
		{"the 503 entry's same_model_retries 0 wins", "", ", same_model_retries: 0", out(503), 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, _ := testEnv(t, cfg(tt.timeout, tt.entry))
			m := v.machine(t, gpt, 0)
			st := m.Start()
			n := 0
			for st.Kind == StepAttempt && v.c.Targets[st.Target] == gpt {
				n++
				st = m.Observe(tt.fail)
			}
			if n != tt.sameAttempts || st.Kind != StepAttempt || v.c.Targets[st.Target] != claude {
				t.Fatalf("%d attempts to gpt-4o then %+v, want %d then claude", n, st, tt.sameAttempts)
			}
		})
	}
}
