package health

import (
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/reroute-go/reroute/policy"
)

var (
	modelRule    = &policy.EjectionRule{Consecutive: 3, Cooldown: 5 * time.Second, MaxCooldown: 30 * time.Second, Scope: policy.ScopeModel}
	providerRule = &policy.EjectionRule{Consecutive: 2, Cooldown: 5 * time.Second, MaxCooldown: 30 * time.Second, Scope: policy.ScopeProvider}
)

// ejectionCompiled is testConfig with passive health on gpt-4o (its own),
// claude (its provider's) and none elsewhere.
func ejectionCompiled(tb testing.TB) *policy.Compiled {
	c := *testCompiled(tb)
	c.Ejection = []*policy.EjectionRule{modelRule, nil, providerRule, nil}
	return &c
}

// inCooldown reports whether until-now is within the n-th ejection's
// spread: [0.8, 1) × min(cooldown × 2^(n-1), max).
func inCooldown(r *policy.EjectionRule, n int, now, until int64) bool {
	d := r.Cooldown
	for i := 1; i < n; i++ {
		d = min(2*d, r.MaxCooldown)
	}
	got := time.Duration(until - now)
	return got >= d*8/10 && got < d
}

// Every transition of passive health with explicit times.
func TestEjectionTransitions(t *testing.T) {
	s := NewState(ejectionCompiled(t))
	now := 100 * sec

	// Two failures: suspect, not ejected; the snapshot is not clear.
	for range 2 {
		if ej, _ := s.Failure(tGPT4o, now); ej {
			t.Fatal("ejected before the threshold")
		}
	}
	if st := s.Lookup(tGPT4o, now); !st.Suspect || st.Ejected {
		t.Fatalf("after 2 of 3 failures: %+v", st)
	}
	if s.Snapshot().Clear(tGPT4o) {
		t.Fatal("a target with a failure streak must not be clear: its next success has to be reported")
	}
	// A success resets the streak: two more failures still do not eject.
	if s.Success(tGPT4o, now) {
		t.Fatal("a success of a target that was not ejected is no recovery")
	}
	if st := s.Lookup(tGPT4o, now); st.Suspect {
		t.Fatalf("after a success: %+v", st)
	}
	s.Failure(tGPT4o, now)
	s.Failure(tGPT4o, now)
	// The third in a row ejects.
	ej, until := s.Failure(tGPT4o, now)
	if !ej || !inCooldown(modelRule, 1, now, until) {
		t.Fatalf("third failure: ejected %v until +%v", ej, time.Duration(until-now))
	}
	st := s.Lookup(tGPT4o, now)
	if !st.Ejected || st.EjectedID != tGPT4o || st.EjectedUntil != until || st.HalfOpen(now) || st.Blocked(now) {
		t.Fatalf("ejected: %+v", st)
	}
	if bs := s.Blocks(now); len(bs) != 1 || bs[0].Kind != Ejected || bs[0].Until != until {
		t.Fatalf("Blocks = %v", bs)
	}
	// A failure while ejected belongs to an attempt begun before: ignored.
	if ej, _ := s.Failure(tGPT4o, now+sec); ej {
		t.Fatal("a failure while ejected ejected again")
	}
	if s.Claim(tGPT4o, now+sec, now+40*sec) {
		t.Fatal("claimed a probe while the ejection runs")
	}
	// At its end: half-open. One claim; a second is refused while it holds.
	if st := s.Lookup(tGPT4o, until); !st.HalfOpen(until) {
		t.Fatalf("at the end of the cooldown: %+v", st)
	}
	if !s.Claim(tGPT4o, until, until+30*sec) || s.Claim(tGPT4o, until+sec, until+31*sec) {
		t.Fatal("want exactly one claim while the first holds")
	}
	// A claim that never reports lapses.
	if !s.Claim(tGPT4o, until+30*sec, until+60*sec) {
		t.Fatal("a lapsed claim must let another probe through")
	}
	// The probe fails: ejected again, for twice as long.
	now = until + 31*sec
	ej, until = s.Failure(tGPT4o, now)
	if n, _ := s.Ejections(tGPT4o); !ej || n != 2 || !inCooldown(modelRule, 2, now, until) {
		t.Fatalf("failed probe: ejected %v (%d) until +%v", ej, n, time.Duration(until-now))
	}
	// Doubling stops at max_cooldown.
	for n := 3; n <= 6; n++ {
		now = until
		_, until = s.Failure(tGPT4o, now)
		if !inCooldown(modelRule, n, now, until) {
			t.Fatalf("ejection %d lasts %v", n, time.Duration(until-now))
		}
	}
	if time.Duration(until-now) >= modelRule.MaxCooldown {
		t.Fatalf("the cap is exceeded: %v", time.Duration(until-now))
	}
	// A success while ejected is ignored, like a failure: it comes from an
	// attempt begun before the ejection.
	if s.Success(tGPT4o, now) {
		t.Fatal("a success during the ejection recovered the target")
	}
	if st := s.Lookup(tGPT4o, now); !st.Ejected {
		t.Fatalf("after a success during the ejection: %+v", st)
	}
	// The probe succeeds: recovered, and nothing is left.
	if !s.Success(tGPT4o, until) {
		t.Fatal("the probe's success must recover the target")
	}
	if st := s.Lookup(tGPT4o, until); st.Ejected || st.Suspect || !s.Snapshot().Clear(tGPT4o) {
		t.Fatalf("after recovery: %+v", st)
	}
	// A fresh ejection starts from the base cooldown again. (Failures
	// stamped before the success are stale and would not count.)
	if ej, _ := s.Failure(tGPT4o, until-sec); ej || s.Lookup(tGPT4o, until).Suspect {
		t.Fatal("a failure older than the latest success counted")
	}
	now = until
	for range 3 {
		ej, until = s.Failure(tGPT4o, now)
	}
	if !ej || !inCooldown(modelRule, 1, now, until) {
		t.Fatalf("ejection after a recovery lasts %v", time.Duration(until-now))
	}
}

// A provider-scoped rule counts the failures of every target of the
// provider together and ejects all of them; targets without a rule are
// not tracked at all.
func TestEjectionScopes(t *testing.T) {
	s := NewState(ejectionCompiled(t))
	now := 100 * sec
	id, ok := s.EjectionID(tClaude)
	if !ok || id != pAnthropic {
		t.Fatalf("EjectionID(claude) = %d %v, want the provider", id, ok)
	}
	if _, ok := s.EjectionID(tMistral); ok {
		t.Fatal("mistral has no rule")
	}
	s.Failure(pAnthropic, now)
	ej, _ := s.Failure(pAnthropic, now)
	if st := s.Lookup(tClaude, now); !ej || !st.Ejected || st.EjectedID != pAnthropic {
		t.Fatalf("claude after two provider failures: %+v", st)
	}
	for range 10 {
		s.Failure(tMistral, now)
	}
	if st := s.Lookup(tMistral, now); st.Ejected || st.Suspect {
		t.Fatalf("a target without a rule: %+v", st)
	}
}

// The cooldown's spread is deterministic and stays within [0.8, 1) of the
// doubled base.
func TestCooldownSpread(t *testing.T) {
	seen := map[time.Duration]bool{}
	for id := range 50 {
		for n := int32(1); n <= 4; n++ {
			d := cooldown(modelRule, n, id, 1e18)
			if d != cooldown(modelRule, n, id, 1e18) {
				t.Fatal("not deterministic")
			}
			if !inCooldown(modelRule, int(n), 0, int64(d)) {
				t.Fatalf("cooldown(%d, %d) = %v", n, id, d)
			}
			seen[d] = true
		}
	}
	if len(seen) < 100 {
		t.Fatalf("only %d distinct cooldowns in 200: the spread does not spread", len(seen))
	}
}

// Exactly one probe per half-open window, however many requests race for
// it on the actor's snapshot, and again after a failed probe.
func TestActorOneProbePerHalfOpenWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		var ejects, recovers atomic.Int32
		a := New(ejectionCompiled(t),
			WithOnEject(func(string, time.Duration, int) { ejects.Add(1) }),
			WithOnRecover(func(string) { recovers.Add(1) }))
		defer a.Stop()
		race := func(now int64) int {
			snap := a.Snapshot()
			st := snap.Lookup(tGPT4o, now)
			if !st.HalfOpen(now) {
				t.Fatalf("not half-open at +%v: %+v", time.Duration(now-st.EjectedUntil), st)
			}
			var won atomic.Int32
			var wg sync.WaitGroup
			for range 64 {
				wg.Go(func() {
					if snap.Claim(st.EjectedID, now, now+30*sec) {
						won.Add(1)
					}
				})
			}
			wg.Wait()
			return int(won.Load())
		}
		now := time.Now().UnixNano()
		for range 3 {
			a.ReportFailure(tGPT4o, now)
		}
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		until := a.Snapshot().Lookup(tGPT4o, now).EjectedUntil
		if n := race(until); n != 1 {
			t.Fatalf("%d probes won the first half-open window, want 1", n)
		}
		// The probe fails: ejected again. A claimer holding the old
		// snapshot, where the target was half-open, cannot claim.
		old := a.Snapshot()
		a.ReportFailure(tGPT4o, until+sec)
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if old.Claim(tGPT4o, until+2*sec, until+40*sec) {
			t.Fatal("a stale snapshot let a probe into the new ejection")
		}
		until2 := a.Snapshot().Lookup(tGPT4o, until).EjectedUntil
		if until2 <= until+sec {
			t.Fatal("not ejected again")
		}
		if n := race(until2); n != 1 {
			t.Fatalf("%d probes won the second half-open window, want 1", n)
		}
		a.ReportSuccess(tGPT4o, until2)
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if st := a.Snapshot().Lookup(tGPT4o, until2); st.Ejected || st.Suspect {
			t.Fatalf("after the probe's success: %+v", st)
		}
		if ejects.Load() != 2 || recovers.Load() != 1 {
			t.Fatalf("hooks: %d ejections, %d recoveries; want 2 and 1", ejects.Load(), recovers.Load())
		}
	})
}

// A streak that begins or ends publishes (the snapshot's Suspect), more
// failures of a streak do not; the actor logs ejections and recoveries.
func TestActorEjectionPublishesAndLogs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		core, logs := observer.New(zap.InfoLevel)
		a := New(ejectionCompiled(t), WithLogger(zap.New(core)))
		defer a.Stop()
		now := time.Now().UnixNano()
		sync := func() {
			t.Helper()
			if err := a.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		s0 := a.Snapshot()
		a.ReportSuccess(tGPT4o, now) // nothing to reset
		sync()
		if a.Snapshot() != s0 {
			t.Fatal("a success of a healthy target published")
		}
		a.ReportFailure(tGPT4o, now)
		sync()
		s1 := a.Snapshot()
		if s1 == s0 || !s1.Lookup(tGPT4o, now).Suspect {
			t.Fatal("the first failure of a streak must publish Suspect")
		}
		a.ReportFailure(tGPT4o, now)
		sync()
		if a.Snapshot() != s1 {
			t.Fatal("the second failure of a streak published")
		}
		a.ReportFailure(tGPT4o, now)
		sync()
		ej := logs.FilterMessage("target ejected").All()
		if len(ej) != 1 {
			t.Fatalf("%d ejection logs: %v", len(ej), logs.All())
		}
		if f := ej[0].ContextMap(); f["id"] != "openai/gpt-4o" || f["scope"] != "target" || f["ejections"] != int64(1) {
			t.Errorf("ejection log fields %v", f)
		}
		a.ReportSuccess(tGPT4o, a.Snapshot().Lookup(tGPT4o, now).EjectedUntil)
		sync()
		if n := logs.FilterMessage("target recovered").Len(); n != 1 {
			t.Fatalf("%d recovery logs", n)
		}
	})
}

// Passive-health reports that find the buffer full are coalesced, not
// lost: a burst of failures still ejects.
func TestActorOutcomeBurstCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		a := New(ejectionCompiled(t), WithBuffer(1), withStripes(1), withRest(time.Hour))
		defer a.Stop()
		now := time.Now().UnixNano()
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				if !a.ReportFailure(tGPT4o, now) || !a.ReportFailure(pAnthropic, now) {
					t.Error("report refused")
				}
			})
		}
		wg.Wait()
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		snap := a.Snapshot()
		if !snap.Lookup(tGPT4o, now).Ejected || !snap.Lookup(tClaude, now).Ejected {
			t.Fatal("a coalesced burst of failures did not eject")
		}
		if a.Coalesced() == 0 || a.Dropped() != 0 {
			t.Fatalf("coalesced %d, dropped %d", a.Coalesced(), a.Dropped())
		}
	})
}
