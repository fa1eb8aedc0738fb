package engine

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/reroute-go/reroute/policy"
)

const contCfg = `
model_providers:
  - model: a/m
    retry_policy:
      fallback_models: [b/m, c/m, d/m]
      default_strategy: different_provider
      default_max_attempts: 3
      on_timeout: {strategy: different_provider, max_attempts: 4}
      max_retry_duration_ms: 10000
  - model: b/m
  - model: c/m
  - model: d/m
  - model: off/m
    retry_policy:
      fallback_models: [b/m]
      continue_streams: false
engine: {retry_budget: {enabled: false}}
`

var errCut = errors.Join(ErrConnectionLost, errors.New("stream cut"))

// all lets every target continue.
func all(int) bool { return true }

// cutOutcome is a continuation attempt that failed on its connection.
func cutOutcome() *policy.Outcome { return &policy.Outcome{Err: errors.New("connection reset")} }

// The continuation's decisions, driven directly in virtual time: which
// target continues, in what order, and when it gives up.
func TestMachineContinue(t *testing.T) {
	s := time.Second
	noB := func(t int) bool { return t != 1 }
	type in struct {
		at      time.Duration
		observe *policy.Outcome
	}
	tests := []struct {
		name    string
		model   string // the primary
		from    string // the target whose answer was cut
		cause   error
		can     func(int) bool
		setup   func(v *env, st interface{ BlockRetryAfter(int, int64) bool })
		inputs  []in
		wants   []want
		deadlin time.Duration
	}{
		{name: "a cut: the same target first, then the fallbacks in order", model: "a/m", from: "a/m", cause: errCut, can: all,
			inputs: []in{{observe: cutOutcome()}, {observe: cutOutcome()}, {observe: out(200)}},
			wants:  []want{{kind: StepAttempt, target: "a/m"}, {kind: StepAttempt, target: "b/m"}, {kind: StepAttempt, target: "c/m"}, {kind: StepDone}}},
		{name: "not the connection: the same target is not asked", model: "a/m", from: "a/m", cause: errors.New("error event"), can: all,
			inputs: []in{{observe: out(200)}},
			wants:  []want{{kind: StepAttempt, target: "b/m"}, {kind: StepDone}}},
		{name: "a fallback's cut: it continues itself, then the next fallback", model: "a/m", from: "b/m", cause: errCut, can: all,
			inputs: []in{{observe: cutOutcome()}},
			wants:  []want{{kind: StepAttempt, target: "b/m"}, {kind: StepAttempt, target: "c/m"}}},
		{name: "only the targets that can continue", model: "a/m", from: "a/m", cause: errCut, can: func(t int) bool { return t == 2 },
			inputs: []in{{observe: out(200)}},
			wants:  []want{{kind: StepAttempt, target: "c/m"}, {kind: StepDone}}},
		{name: "a rejection is not asked again: the next that can", model: "a/m", from: "a/m", cause: errCut, can: noB,
			inputs: []in{{observe: &policy.Outcome{Status: 400, NoSameTarget: true}}, {observe: out(200)}},
			wants:  []want{{kind: StepAttempt, target: "a/m"}, {kind: StepAttempt, target: "c/m"}, {kind: StepDone}}},
		{name: "a blocked fallback is skipped", model: "a/m", from: "a/m", cause: errors.New("malformed"), can: all,
			setup: func(v *env, st interface{ BlockRetryAfter(int, int64) bool }) {
				st.BlockRetryAfter(v.c.ID(1, policy.ScopeModel), int64(time.Minute))
			},
			inputs: []in{{observe: out(200)}},
			wants:  []want{{kind: StepAttempt, target: "c/m"}, {kind: StepDone}}},
		{name: "a blocked cut target is not asked first", model: "a/m", from: "a/m", cause: errCut, can: all,
			setup: func(v *env, st interface{ BlockRetryAfter(int, int64) bool }) {
				st.BlockRetryAfter(v.c.ID(0, policy.ScopeModel), int64(time.Hour))
			},
			inputs: []in{{observe: out(200)}},
			wants:  []want{{kind: StepAttempt, target: "b/m"}, {kind: StepDone}}},
		{name: "max_attempts counts the cut", model: "a/m", from: "a/m", cause: errCut, can: all,
			inputs: []in{{observe: cutOutcome()}, {observe: cutOutcome()}, {observe: cutOutcome()}},
			wants: []want{{kind: StepAttempt, target: "a/m"}, {kind: StepAttempt, target: "b/m"}, {kind: StepAttempt, target: "c/m"},
				{kind: StepFail, reason: ReasonMaxAttempts, attempts: 4}}},
		{name: "the time budget counts from the cut", model: "a/m", from: "a/m", cause: errCut, can: all,
			inputs: []in{{at: 11 * s, observe: cutOutcome()}},
			wants:  []want{{kind: StepAttempt, target: "a/m"}, {kind: StepFail, reason: ReasonBudget, attempts: 2}}},
		{name: "the deadline bounds it", model: "a/m", from: "a/m", cause: errCut, can: all, deadlin: 5 * s,
			inputs: []in{{at: 5 * s, observe: cutOutcome()}},
			wants:  []want{{kind: StepAttempt, target: "a/m"}, {kind: StepFail, reason: ReasonDeadline, attempts: 2}}},
		{name: "nobody can continue", model: "a/m", from: "a/m", cause: errCut, can: func(int) bool { return false },
			wants: []want{{kind: StepFail, reason: ReasonProviders, attempts: 1}}},
		{name: "continue_streams false continues nothing", model: "off/m", from: "off/m", cause: errCut, can: all,
			wants: []want{{kind: StepFail, reason: ReasonProviders, attempts: 1}}},
		{name: "an answer that cannot follow ends it", model: "a/m", from: "a/m", cause: errCut, can: all,
			inputs: []in{{observe: &policy.Outcome{Status: 400, Final: true}}},
			wants:  []want{{kind: StepAttempt, target: "a/m"}, {kind: StepFail, reason: ReasonProviders, attempts: 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, st := testEnv(t, contCfg)
			if tt.setup != nil {
				tt.setup(v, st)
			}
			m := v.machine(t, tt.model, 0)
			if tt.deadlin > 0 {
				m.SetDeadline(int64(tt.deadlin))
			}
			defer m.Finish()
			from, _ := v.c.Lookup(tt.from)
			step := m.resume(resumption{from: from, attempts: 1, cause: tt.cause, can: tt.can})
			checkStep(t, 0, v, m, step, tt.wants[0])
			for i, x := range tt.inputs {
				m.SetNow(int64(x.at))
				checkStep(t, i+1, v, m, m.Observe(x.observe), tt.wants[i+1])
			}
			if len(tt.wants) != len(tt.inputs)+1 {
				t.Fatalf("test has %d wants for %d inputs", len(tt.wants), len(tt.inputs))
			}
		})
	}
}

// An ejected target does not continue, not even its own answer.
func TestMachineContinueSkipsEjected(t *testing.T) {
	v, st := testEnv(t, contCfg+"\n") // passive health on by default
	for _, name := range []string{"a/m", "b/m"} {
		i, _ := v.c.Lookup(name)
		id, ok := st.EjectionID(i)
		if !ok {
			t.Fatalf("passive health off for %s", name)
		}
		for n := 0; n < 10; n++ {
			st.Failure(id, 0)
		}
		if !st.Lookup(i, 1).Ejected {
			t.Fatalf("%s not ejected", name)
		}
	}
	m := v.machine(t, "a/m", 1)
	defer m.Finish()
	checkStep(t, 0, v, m, m.resume(resumption{from: 0, attempts: 1, cause: errCut, can: all}), want{kind: StepAttempt, target: "c/m"})
}

// Continue through the engine: the attempts number on from the request's,
// carry Continuation, are told to the Continue hook and not to Retry, and
// the delivered continuation is a Result that can be continued again.
func TestEngineContinue(t *testing.T) {
	var conts []ContinueEvent
	var retries atomic.Int32
	e := mustEngine(t, contCfg, WithHooks(Hooks{
		Continue: func(ev ContinueEvent) { conts = append(conts, ev) },
		Retry:    func(RetryEvent) { retries.Add(1) },
	}))
	ctx := testContext(t)
	// The primary fails once before commit: the request's attempts are 2.
	first, err := e.Do(ctx, "a/m", newUpstreams(map[string][]step{"a/m": {{status: 503}}}).call)
	if err != nil || first.Target != "b/m" || first.Attempts != 2 {
		t.Fatalf("Do = %+v, %v; want b/m after 2 attempts", first, err)
	}
	first.End(time.Second, errCut)
	var got []Attempt
	call := func(ctx context.Context, a Attempt) policy.Outcome {
		got = append(got, a)
		if a.Target == "b/m" {
			return policy.Outcome{Err: errors.New("connection refused")}
		}
		return policy.Outcome{Status: 200}
	}
	res, err := e.Continue(ctx, first, errCut, all, call)
	if err != nil || res.Target != "c/m" || res.Attempts != 4 {
		t.Fatalf("Continue = %+v, %v; want c/m at attempt 4", res, err)
	}
	if len(got) != 2 || got[0].Target != "b/m" || got[0].Number != 3 || !got[0].Continuation || got[1].Target != "c/m" || got[1].Number != 4 {
		t.Fatalf("attempts %+v, want b/m #3 then c/m #4, both continuations", got)
	}
	want := []ContinueEvent{
		{From: "b/m", To: "b/m", FromIndex: 1, ToIndex: 1, Number: 3, Fallback: -1},
		{From: "b/m", To: "c/m", FromIndex: 1, ToIndex: 2, Number: 4, Fallback: 1},
	}
	if !slices.Equal(conts, want) {
		t.Fatalf("Continue events %+v, want %+v", conts, want)
	}
	if n := retries.Load(); n != 1 {
		t.Fatalf("%d Retry events, want the 1 before commit", n)
	}
	if c := e.Counts("b/m"); c.Failures != 2 || c.Successes != 0 {
		t.Fatalf("b/m counts %+v: want its cut answer and its failed continuation as failures", c)
	}
	// The continuation fails after commit too: continued again, from
	// attempt 4 on, by the same target first (b/m cannot).
	res.End(time.Second, errCut)
	again, err := e.Continue(ctx, res, errCut, func(t int) bool { return t != 1 }, call)
	if err != nil || again.Target != "c/m" || again.Attempts != 5 {
		t.Fatalf("second Continue = %+v, %v; want c/m at attempt 5", again, err)
	}
	again.End(time.Second, nil)
	if c := e.Counts("c/m"); c.Successes != 1 || c.Failures != 1 {
		t.Fatalf("c/m counts %+v: want its cut answer and its continuation", c)
	}
}

// A continuation that cannot be made returns the *ExhaustedError listing
// the failure after commit, and nothing but one result.
func TestEngineContinueExhausted(t *testing.T) {
	var exhausted []Reason
	e := mustEngine(t, contCfg, WithHooks(Hooks{Exhausted: func(r Reason) { exhausted = append(exhausted, r) }}))
	ctx := testContext(t)
	res, err := e.Do(ctx, "a/m", newUpstreams(nil).call)
	if err != nil {
		t.Fatal(err)
	}
	res.End(time.Second, errCut)
	calls := 0
	_, err = e.Continue(ctx, res, errCut, all, func(context.Context, Attempt) policy.Outcome {
		calls++
		return policy.Outcome{Err: errors.New("connection refused")}
	})
	ex := asExhausted(t, err)
	if ex.Reason != ReasonMaxAttempts || calls != 3 || len(ex.Attempts) != 4 || ex.Attempts[0].Target != "a/m" || !errors.Is(ex.Attempts[0].Err, ErrConnectionLost) {
		t.Fatalf("exhausted %+v after %d calls; want max_attempts, the cut listed first and 3 continuation attempts", ex, calls)
	}
	if !slices.Equal(exhausted, []Reason{ReasonMaxAttempts}) {
		t.Fatalf("Exhausted hook %v", exhausted)
	}
	if _, err := e.Continue(ctx, Result{}, errCut, all, newUpstreams(nil).call); !errors.Is(err, errNotDelivered) {
		t.Fatalf("Continue of a zero Result: %v", err)
	}
	if _, err := e.Continue(ctx, res, errCut, nil, newUpstreams(nil).call); !errors.Is(err, errNilArgument) {
		t.Fatalf("Continue with a nil can: %v", err)
	}
	e.Close()
	if _, err := e.Continue(ctx, res, errCut, all, newUpstreams(nil).call); !errors.Is(err, ErrClosed) {
		t.Fatalf("Continue after Close: %v", err)
	}
}

// Continuing continuations is bounded like one continuation: every
// failure after commit of the request counts under on_timeout's
// max_attempts (4 here), and the time budget runs from the first.
func TestEngineContinueBoundedAcrossContinuations(t *testing.T) {
	e := mustEngine(t, contCfg)
	ctx := testContext(t)
	res, err := e.Do(ctx, "a/m", newUpstreams(nil).call)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	ok := func(context.Context, Attempt) policy.Outcome { calls++; return policy.Outcome{Status: 200} }
	for i := 1; i <= 3; i++ {
		res.End(time.Second, errCut)
		if res, err = e.Continue(ctx, res, errCut, all, ok); err != nil || res.Target != "a/m" || res.Attempts != i+1 {
			t.Fatalf("continuation %d = %+v, %v; want a/m continuing itself at attempt %d", i, res, err, i+1)
		}
	}
	res.End(time.Second, errCut)
	_, err = e.Continue(ctx, res, errCut, all, ok)
	if ex := asExhausted(t, err); ex.Reason != ReasonMaxAttempts || calls != 3 {
		t.Fatalf("fourth cut: %v after %d calls; want max_attempts_reached after 3", ex, calls)
	}
}

// A Continue hook that panics ends the continuation with a *PanicError,
// its one result.
func TestEngineContinueHookPanics(t *testing.T) {
	e := mustEngine(t, contCfg, WithHooks(Hooks{Continue: func(ContinueEvent) { panic("hook bug") }}))
	ctx := testContext(t)
	res, err := e.Do(ctx, "a/m", newUpstreams(nil).call)
	if err != nil {
		t.Fatal(err)
	}
	res.End(time.Second, errCut)
	_, err = e.Continue(ctx, res, errCut, all, newUpstreams(nil).call)
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "hook bug" {
		t.Fatalf("err = %v, want the hook's *PanicError", err)
	}
}
