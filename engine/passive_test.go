package engine

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/reroute-go/reroute/policy"
)

// passiveConfig: gpt-4o fails over to claude; passive health with a
// threshold of 3 and a cooldown of 10 s (at most 40 s).
const passiveConfig = `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {fallback_models: [anthropic/claude-3-5-sonnet], default_strategy: different_provider, default_max_attempts: 2}
  - model: anthropic/claude-3-5-sonnet
    retry_policy: {fallback_models: [openai/gpt-4o], default_strategy: different_provider, default_max_attempts: 2}
engine: {passive_health: {consecutive_failures: 3, cooldown: 10s, max_cooldown: 40s}}
`

// switchable is an upstream whose answer per target the test sets, and
// which counts calls.
type switchable struct {
	mu     sync.Mutex
	status map[string]int
	calls  map[string]int
	gate   map[string]chan struct{} // when set, a call waits for it (or its context)
}

func newSwitchable() *switchable {
	return &switchable{status: map[string]int{}, calls: map[string]int{}, gate: map[string]chan struct{}{}}
}

func (u *switchable) set(target string, status int) {
	u.mu.Lock()
	u.status[target] = status
	u.mu.Unlock()
}

func (u *switchable) count(target string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[target]
}

func (u *switchable) call(ctx context.Context, a Attempt) policy.Outcome {
	u.mu.Lock()
	u.calls[a.Target]++
	st, gate := u.status[a.Target], u.gate[a.Target]
	u.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return policy.Outcome{Err: ctx.Err()}
		}
	}
	if st == 0 {
		st = 200
	}
	return policy.Outcome{Status: st}
}

// A primary that fails fast is ejected after three failures in a row; the
// requests after that start at the fallback, their first attempt and not
// a retry; after the cooldown exactly one request probes the primary, and
// its success brings the primary back.
func TestPassiveHealthEjectsProbesRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var ejected, recovered, probes atomic.Int32
		e := mustEngine(t, passiveConfig, WithHooks(Hooks{
			Ejected:   func(string, time.Duration, int) { ejected.Add(1) },
			Recovered: func(string) { recovered.Add(1) },
			Probe:     func(string) { probes.Add(1) },
		}))
		ctx := testContext(t)
		up := newSwitchable()
		up.set(gpt, 503)
		sync := func() {
			t.Helper()
			if err := e.Actor().Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			res, err := e.Do(ctx, gpt, up.call)
			if err != nil || res.Target != claude || res.Attempts != 2 {
				t.Fatalf("request %d: %v %+v", i+1, err, res)
			}
			sync()
		}
		if ejected.Load() != 1 {
			t.Fatalf("%d ejections after 3 failures in a row, want 1", ejected.Load())
		}
		for i := range 20 {
			res, err := e.Do(ctx, gpt, up.call)
			if err != nil || res.Target != claude || res.Attempts != 1 {
				t.Fatalf("while ejected, request %d: %v %+v", i+1, err, res)
			}
		}
		if n := up.count(gpt); n != 3 {
			t.Fatalf("the ejected primary got %d attempts, want the 3 that ejected it", n)
		}

		// The cooldown ends (10 s at most); the primary recovers; one
		// request probes it.
		time.Sleep(10 * time.Second)
		up.set(gpt, 0)
		res, err := e.Do(ctx, gpt, up.call)
		if err != nil || res.Target != gpt || probes.Load() != 1 {
			t.Fatalf("probe: %v %+v, %d probes", err, res, probes.Load())
		}
		sync()
		if recovered.Load() != 1 {
			t.Fatalf("%d recoveries after the probe's success", recovered.Load())
		}
		for i := range 5 {
			if res, err := e.Do(ctx, gpt, up.call); err != nil || res.Target != gpt {
				t.Fatalf("after recovery, request %d: %v %+v", i+1, err, res)
			}
		}
		if probes.Load() != 1 {
			t.Fatalf("%d probes, want 1", probes.Load())
		}
	})
}

// eject makes gpt fail three times in a row and waits for the actor.
func eject(t *testing.T, e *Engine, up *switchable, target string) {
	t.Helper()
	ctx := testContext(t)
	up.set(target, 503)
	for range 3 {
		e.Do(ctx, target, up.call)
	}
	if err := e.Actor().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := e.Actor().Snapshot().Lookup(0, 0); !st.Ejected {
		t.Fatalf("%s not ejected: %+v", target, st)
	}
}

// Exactly one probe per half-open window under concurrency: while the probe
// hangs, every other request goes to the fallback; a probe the caller
// abandons releases its claim at once.
func TestPassiveHealthOneProbeConcurrently(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, passiveConfig)
		up := newSwitchable()
		eject(t, e, up, gpt)
		time.Sleep(10 * time.Second)

		gate := make(chan struct{})
		up.mu.Lock()
		up.status[gpt], up.gate[gpt] = 200, gate
		up.mu.Unlock()
		before := up.count(gpt)
		pctx, cancel := context.WithCancel(testContext(t))
		probeDone := make(chan error, 1)
		go func() {
			_, err := e.Do(pctx, gpt, up.call)
			probeDone <- err
		}()
		synctest.Wait() // the probe is in its call
		if up.count(gpt) != before+1 {
			t.Fatalf("no probe started")
		}
		var wg sync.WaitGroup
		var elsewhere atomic.Int32
		for range 32 {
			wg.Go(func() {
				if res, err := e.Do(testContext(t), gpt, up.call); err == nil && res.Target == claude {
					elsewhere.Add(1)
				}
			})
		}
		wg.Wait()
		if elsewhere.Load() != 32 || up.count(gpt) != before+1 {
			t.Fatalf("%d of 32 went to the fallback, the primary got %d more attempts; want 32 and 1", elsewhere.Load(), up.count(gpt)-before)
		}
		// The caller abandons the probe: the claim is released, and the
		// next request probes at once.
		cancel()
		if err := <-probeDone; !errors.Is(err, context.Canceled) {
			t.Fatalf("abandoned probe: %v", err)
		}
		close(gate)
		if res, err := e.Do(testContext(t), gpt, up.call); err != nil || res.Target != gpt {
			t.Fatalf("after the abandoned probe: %v %+v", err, res)
		}
	})
}

// A failed probe ejects the primary again, for longer, and the probing
// request does not retry it: it fails over.
func TestPassiveHealthFailedProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, passiveConfig)
		up := newSwitchable()
		eject(t, e, up, gpt)
		time.Sleep(10 * time.Second)
		before := up.count(gpt)
		res, err := e.Do(testContext(t), gpt, up.call)
		if err != nil || res.Target != claude || up.count(gpt) != before+1 {
			t.Fatalf("failed probe: %v %+v, %d primary attempts", err, res, up.count(gpt)-before)
		}
		if err := e.Actor().Sync(testContext(t)); err != nil {
			t.Fatal(err)
		}
		st := e.Actor().Snapshot().Lookup(0, time.Now().UnixNano())
		if !st.Ejected || time.Duration(st.EjectedUntil-time.Now().UnixNano()) < 16*time.Second {
			t.Fatalf("after a failed probe: %+v, want ejected for about 20 s", st)
		}
	})
}

// Never all down: when every candidate is ejected, a request still tries
// one (the one whose ejection ends first); once it has had that attempt it
// does not go on to the other ejected ones. Retry-After blocks are never a
// last resort.
func TestPassiveHealthNeverAllDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := mustEngine(t, passiveConfig)
		up := newSwitchable()
		eject(t, e, up, gpt)
		time.Sleep(time.Second)
		up.set(claude, 503)
		for range 3 {
			e.Do(testContext(t), claude, up.call)
		}
		e.Actor().Sync(testContext(t))
		g0, c0 := up.count(gpt), up.count(claude)
		_, err := e.Do(testContext(t), gpt, up.call)
		ex := asExhausted(t, err)
		// gpt's ejection ends first: it is the one tried.
		if up.count(gpt) != g0+1 || up.count(claude) != c0 || len(ex.Attempts) != 1 || ex.Reason != ReasonProviders {
			t.Fatalf("all ejected: %d gpt, %d claude attempts; %+v", up.count(gpt)-g0, up.count(claude)-c0, ex)
		}
		if len(ex.Ejected) == 0 {
			t.Fatalf("the exhaustion does not say what was skipped as ejected: %+v", ex)
		}
		_, body := render(t, ex)
		if len(body.Error.Ejected) == 0 {
			t.Errorf("the exhaustion body lacks ejected_targets: %+v", body.Error)
		}
	})
}

// A target that fails every other attempt is never ejected, however fast
// the requests come: its successes reset the streak even when they arrive
// before the actor has applied the failure before them (Failing), and
// when a burst coalesces both kinds into one pending slot.
func TestPassiveHealthAlternatingNeverEjects(t *testing.T) {
	e := mustEngine(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy: {default_strategy: same_model, default_max_attempts: 3}
engine: {retry_budget: {enabled: false}}
`)
	ctx := testContext(t)
	call := func(_ context.Context, a Attempt) policy.Outcome {
		if a.Number == 1 {
			return policy.Outcome{Status: 503}
		}
		return policy.Outcome{Status: 200}
	}
	for i := range 100_000 {
		if _, err := e.Do(ctx, gpt, call); err != nil {
			t.Fatalf("request %d: %v (coalesced %d)", i+1, err, e.Actor().Coalesced())
		}
	}
	if err := e.Actor().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := e.Actor().Snapshot().Lookup(0, 0); st.Ejected {
		t.Fatalf("ejected: %+v", st)
	}
}
