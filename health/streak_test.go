package health

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// A fleet's failures count together: another replica's strikes add to
// this replica's streak as its own failures do, and the threshold's worth
// among them ejects. A strike older than a success applied does not count,
// another replica's clear ends the streak, and while the identifier is
// ejected or half-open strikes change nothing (only the probe decides).
func TestStateStrikesCountTowardTheStreak(t *testing.T) {
	s := NewState(ejectionCompiled(t))
	now := 100 * sec
	strike := func(at int64) bool { return s.Import(tGPT4o, Fact{Kind: Ejected, Strike: true, Until: at}) }
	s.Failure(tGPT4o, now)
	if !strike(now+1) || s.Streak(tGPT4o) != 2 {
		t.Fatalf("streak after a failure and a strike: %d", s.Streak(tGPT4o))
	}
	if !s.Suspect(tGPT4o) {
		t.Error("not suspect with a streak of strikes")
	}
	if !strike(now + 2) {
		t.Fatal("the third failure in a row changed nothing")
	}
	if n, until := s.Ejections(tGPT4o); n != 1 || !inCooldown(modelRule, 1, now+2, until) {
		t.Fatalf("after three failures in a row among the fleet: %d ejections until %d", n, until)
	}
	// Ejected: a strike is an attempt that began before, or another
	// replica not knowing yet; nothing changes, not even at half-open.
	_, until := s.Ejections(tGPT4o)
	if strike(now+3) || strike(until+1) {
		t.Error("a strike changed an ejected identifier")
	}
	if n, u := s.Ejections(tGPT4o); n != 1 || u != until {
		t.Errorf("a strike at half-open counted as the probe's failure: %d ejections until %d", n, u)
	}

	// Healthy again: a success at t, then a strike older than it does
	// not count; a clear ends the streak.
	s.Success(tGPT4o, until+2)
	if strike(until + 1) {
		t.Error("a strike older than the latest success counted")
	}
	strike(until + 3)
	strike(until + 4)
	if s.Streak(tGPT4o) != 2 {
		t.Fatalf("streak %d, want 2", s.Streak(tGPT4o))
	}
	if !s.Import(tGPT4o, Fact{Kind: Ejected, Clear: true, Until: until + 5}) || s.Streak(tGPT4o) != 0 {
		t.Errorf("a clear left a streak of %d", s.Streak(tGPT4o))
	}
	// No passive health on the identifier: ignored.
	if s.Import(tMini, Fact{Kind: Ejected, Strike: true, Until: now}) {
		t.Error("a strike on an identifier without passive health changed it")
	}
}

// An imported ejection that ends no later than the one recorded still
// carries a larger number: the replicas agree on it (it names the probe
// lock and doubles the next cooldown). A smaller one changes nothing.
func TestStateImportEjectionMergesTheNumber(t *testing.T) {
	s := NewState(ejectionCompiled(t))
	now := 100 * sec
	for range 3 {
		s.Failure(tGPT4o, now)
	}
	_, until := s.Ejections(tGPT4o)
	if !s.Import(tGPT4o, Fact{Kind: Ejected, Until: until - sec, Ejections: 3}) {
		t.Fatal("a larger ejection number that ends earlier changed nothing")
	}
	if n, u := s.Ejections(tGPT4o); n != 3 || u != until {
		t.Fatalf("after the import: %d ejections until %d, want 3 until %d", n, u, until)
	}
	if s.Import(tGPT4o, Fact{Kind: Ejected, Until: until - sec, Ejections: 2}) {
		t.Error("a smaller number that ends earlier changed something")
	}
	// The probe's failure doubles from the merged number.
	s.Failure(tGPT4o, until)
	if n, u := s.Ejections(tGPT4o); n != 4 || !inCooldown(modelRule, 4, until, u) {
		t.Errorf("after the failed probe: %d ejections until %d", n, u)
	}
}

// The actor exports its strikes and clears, and applies those of other
// replicas: the strike that completes the streak ejects it, and that
// ejection is its own: exported and told to the hooks. Attention follows
// the imported streak, so that a success is reported and clears it.
func TestActorStrikesFromTheFleet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		sink := make(chan Fact, 16)
		var ejects []int
		a := New(ejectionCompiled(t), WithFactSink(sink), WithOnEject(func(_ string, _ time.Duration, n int) { ejects = append(ejects, n) }))
		defer a.Stop()
		now := time.Now().UnixNano()
		apply := func(f Fact) {
			t.Helper()
			if err := a.Import(f); err != nil {
				t.Fatal(err)
			}
			if err := a.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		apply(Fact{Name: "openai/gpt-4o", Kind: Ejected, Strike: true, Until: now})
		if !a.Snapshot().Attention(tGPT4o) {
			t.Fatal("no attention after a strike of the fleet: successes would go unreported")
		}
		apply(Fact{Name: "openai/gpt-4o", Kind: Ejected, Clear: true, Until: now + 1})
		if a.Snapshot().Attention(tGPT4o) {
			t.Fatal("attention after the fleet's clear")
		}
		if got := recv(sink); len(got) != 0 {
			t.Fatalf("imports were exported: %+v", got)
		}

		// A local success that ends the streak is exported as a clear.
		a.ReportFailure(tGPT4o, now+2)
		a.ReportSuccess(tGPT4o, now+3)
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		got := recv(sink)
		if len(got) != 2 || !got[0].Strike || got[0].Until != now+2 || !got[1].Clear || got[1].Until != now+3 {
			t.Fatalf("exported %+v, want a strike and a clear", got)
		}

		// One local failure and two strikes: ejected by the third.
		a.ReportFailure(tGPT4o, now+4)
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		recv(sink)
		apply(Fact{Name: "openai/gpt-4o", Kind: Ejected, Strike: true, Until: now + 5})
		apply(Fact{Name: "openai/gpt-4o", Kind: Ejected, Strike: true, Until: now + 6})
		st := a.Snapshot().Lookup(tGPT4o, now+6)
		if !st.Ejected || !inCooldown(modelRule, 1, now+6, st.EjectedUntil) {
			t.Fatalf("after the fleet's third failure in a row: %+v", st)
		}
		got = recv(sink)
		if len(got) != 1 || got[0].Strike || got[0].Ejections != 1 || got[0].Until != st.EjectedUntil {
			t.Fatalf("exported %+v, want the ejection", got)
		}
		if len(ejects) != 1 || ejects[0] != 1 {
			t.Errorf("ejection hook calls %v", ejects)
		}
	})
}

func TestActorImportRefusesMixedFlags(t *testing.T) {
	a := New(ejectionCompiled(t))
	defer a.Stop()
	now := time.Now().UnixNano()
	for _, f := range []Fact{
		{Name: "openai/gpt-4o", Kind: RetryAfter, Strike: true, Until: now},
		{Name: "openai/gpt-4o", Kind: Latency, Clear: true, Until: now},
		{Name: "openai/gpt-4o", Kind: Ejected, Strike: true},
		{Name: "openai/gpt-4o", Kind: Ejected, Strike: true, Recovered: true, Until: now},
		{Name: "openai/gpt-4o", Kind: Ejected, Strike: true, Clear: true, Until: now},
		{Name: "openai/gpt-4o", Kind: Ejected, Hold: true, Clear: true, Until: now},
	} {
		if err := a.Import(f); !errors.Is(err, ErrBadFact) {
			t.Errorf("Import(%+v) = %v, want ErrBadFact", f, err)
		}
	}
}

// An ejection imported after a recovery that ends sooner than the
// shortest cooldown after it was made before the recovery (it crossed it
// on the way, or a reconnecting replica wrote it back): ignored. One that
// ends later may be newer and ejects.
func TestStateImportEjectionOlderThanRecovery(t *testing.T) {
	for _, imported := range []bool{false, true} {
		s := NewState(ejectionCompiled(t))
		now := 100 * sec
		for range 3 {
			s.Failure(tGPT4o, now)
		}
		_, until := s.Ejections(tGPT4o)
		recovered := until + sec
		if imported {
			s.Import(tGPT4o, Fact{Kind: Ejected, Recovered: true, Until: recovered})
		} else if !s.Success(tGPT4o, recovered) {
			t.Fatal("the probe's success did not recover")
		}
		if n, _ := s.Ejections(tGPT4o); n != 0 {
			t.Fatalf("imported %v: still ejected", imported)
		}
		// Ends 3 s after the recovery: shorter than 0.8 × the 5 s cooldown.
		if s.Import(tGPT4o, Fact{Kind: Ejected, Until: recovered + 3*sec, Ejections: 1}) {
			t.Errorf("imported %v: an ejection older than the recovery ejected again", imported)
		}
		if !s.Import(tGPT4o, Fact{Kind: Ejected, Until: recovered + 4*sec + 1, Ejections: 1}) {
			t.Errorf("imported %v: an ejection that may be newer than the recovery was ignored", imported)
		}
	}
}
