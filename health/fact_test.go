package health

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// recv takes every fact waiting in c.
func recv(c <-chan Fact) []Fact {
	var out []Fact
	for {
		select {
		case f := <-c:
			out = append(out, f)
		default:
			return out
		}
	}
}

// Local reports are exported as facts, by name, once applied; imports are
// applied with max-expiration and never exported again.
func TestActorExportsLocalFactsOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		sink := make(chan Fact, 16)
		a := New(ejectionCompiled(t), WithFactSink(sink))
		defer a.Stop()
		now := time.Now().UnixNano()
		a.ReportRetryAfter(tMini, now+30*sec)
		for range 3 {
			a.ReportFailure(tGPT4o, now)
		}
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		got := recv(sink)
		if len(got) != 4 {
			t.Fatalf("exported %+v, want a retry-after, two strikes and an ejection", got)
		}
		if f := got[0]; f.Name != "openai/gpt-4o-mini" || f.Provider || f.Kind != RetryAfter || f.Until != now+30*sec {
			t.Errorf("retry-after fact %+v", f)
		}
		for _, f := range got[1:3] {
			if f.Name != "openai/gpt-4o" || f.Kind != Ejected || !f.Strike || f.Until != now {
				t.Errorf("strike fact %+v", f)
			}
		}
		if f := got[3]; f.Name != "openai/gpt-4o" || f.Kind != Ejected || f.Ejections != 1 || f.Until <= now || f.Strike {
			t.Errorf("ejection fact %+v", f)
		}

		// Imports: a later retry-after extends, an earlier one does not;
		// a provider's latency block; nothing of it is exported.
		for _, f := range []Fact{
			{Name: "openai/gpt-4o-mini", Kind: RetryAfter, Until: now + 60*sec},
			{Name: "openai/gpt-4o-mini", Kind: RetryAfter, Until: now + 10*sec},
			{Name: "anthropic", Provider: true, Kind: Latency, Until: now + 20*sec},
		} {
			if err := a.Import(f); err != nil {
				t.Fatalf("Import(%+v): %v", f, err)
			}
		}
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := recv(sink); len(got) != 0 {
			t.Fatalf("imports were exported: %+v", got)
		}
		snap := a.Snapshot()
		if st := snap.Lookup(tMini, now); st.Until != now+60*sec || st.Kind != RetryAfter {
			t.Errorf("gpt-4o-mini after imports: %+v", st)
		}
		if st := snap.Lookup(tClaude, now); st.Until != now+20*sec || !st.Latency {
			t.Errorf("claude after the provider's imported latency block: %+v", st)
		}
		// A local report that does not change the deadline sends nothing.
		a.ReportRetryAfter(tMini, now+50*sec)
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if got := recv(sink); len(got) != 0 {
			t.Fatalf("a retry-after shorter than the imported one was exported: %+v", got)
		}
	})
}

func TestActorImportRefuses(t *testing.T) {
	a := New(ejectionCompiled(t))
	now := time.Now().UnixNano()
	for _, tt := range []struct {
		f    Fact
		want error
	}{
		{Fact{Name: "openai/gpt-5", Kind: RetryAfter, Until: now}, ErrUnknownName},
		{Fact{Name: "openai", Kind: RetryAfter, Until: now}, ErrUnknownName}, // a provider named as a target
		{Fact{Name: "openai/gpt-4o", Provider: true, Kind: RetryAfter, Until: now}, ErrUnknownName},
		{Fact{Name: "openai/gpt-4o", Kind: Kind(7), Until: now}, ErrBadFact},
		{Fact{Name: "openai/gpt-4o", Kind: RetryAfter}, ErrBadFact},
		{Fact{Name: "openai/gpt-4o", Kind: Latency, Recovered: true}, ErrBadFact},
	} {
		if err := a.Import(tt.f); !errors.Is(err, tt.want) {
			t.Errorf("Import(%+v) = %v, want %v", tt.f, err, tt.want)
		}
	}
	a.Stop()
	if err := a.Import(Fact{Name: "openai/gpt-4o", Kind: RetryAfter, Until: now}); !errors.Is(err, ErrStopped) {
		t.Errorf("Import after Stop = %v", err)
	}
}

// An imported ejection ejects (the larger number of ejections wins), a
// hold extends it without counting, and an imported recovery ends it.
func TestActorImportEjection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		var ejects, recovers int
		a := New(ejectionCompiled(t),
			WithOnEject(func(string, time.Duration, int) { ejects++ }),
			WithOnRecover(func(string) { recovers++ }))
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
		apply(Fact{Name: "openai/gpt-4o", Kind: Ejected, Until: now + 5*sec, Ejections: 2})
		st := a.Snapshot().Lookup(tGPT4o, now)
		if !st.Ejected || st.EjectedUntil != now+5*sec || !a.Snapshot().Attention(tGPT4o) {
			t.Fatalf("after an imported ejection: %+v", st)
		}
		if n, _ := a.state.Ejections(tGPT4o); n != 2 {
			t.Errorf("ejections %d, want 2", n)
		}
		// Not claimable before its end; a hold pushes the end.
		if a.Snapshot().Claim(tGPT4o, now+5*sec-1, now+6*sec) {
			t.Fatal("claimed during the ejection")
		}
		apply(Fact{Name: "openai/gpt-4o", Kind: Ejected, Hold: true, Until: now + 8*sec})
		if st := a.Snapshot().Lookup(tGPT4o, now); st.EjectedUntil != now+8*sec {
			t.Fatalf("after a hold: %+v", st)
		}
		if a.Snapshot().Claim(tGPT4o, now+7*sec, now+9*sec) {
			t.Fatal("claimed while held")
		}
		// Passive health is off for gpt-4o-mini here: its ejection is not
		// applied.
		apply(Fact{Name: "openai/gpt-4o-mini", Kind: Ejected, Until: now + 5*sec, Ejections: 1})
		if st := a.Snapshot().Lookup(tMini, now); st.Ejected {
			t.Fatalf("ejected without passive health: %+v", st)
		}
		apply(Fact{Name: "openai/gpt-4o", Kind: Ejected, Recovered: true})
		if st := a.Snapshot().Lookup(tGPT4o, now); st.Ejected || st.Suspect {
			t.Fatalf("after an imported recovery: %+v", st)
		}
		// A hold of a healthy identifier does nothing.
		apply(Fact{Name: "openai/gpt-4o", Kind: Ejected, Hold: true, Until: now + 9*sec})
		if st := a.Snapshot().Lookup(tGPT4o, now); st.Ejected {
			t.Fatalf("a hold ejected a healthy target: %+v", st)
		}
		if ejects != 1 || recovers != 1 {
			t.Errorf("hooks: %d ejections, %d recoveries; want 1 and 1", ejects, recovers)
		}
	})
}

// A full sink drops and counts, never blocks.
func TestActorFactSinkFullDrops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		sink := make(chan Fact, 1)
		a := New(testCompiled(t), WithFactSink(sink))
		defer a.Stop()
		now := time.Now().UnixNano()
		for i := range 4 {
			a.ReportRetryAfter(i, now+30*sec)
			if err := a.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if len(sink) != 1 || a.FactsDropped() != 3 {
			t.Fatalf("sink holds %d, dropped %d; want 1 and 3", len(sink), a.FactsDropped())
		}
	})
}

func TestMaxDuration(t *testing.T) {
	c := ejectionCompiled(t)
	for _, tt := range []struct {
		id   int
		k    Kind
		want time.Duration
	}{
		{tGPT4o, RetryAfter, 300 * time.Second},
		{tMini, RetryAfter, 300 * time.Second}, // no retry_policy: the default
		{tGPT4o, Latency, 60 * time.Second},
		{tMini, Latency, 0},
		{pAnthropic, Latency, 300 * time.Second}, // claude's block_duration_seconds is the default
		{tGPT4o, Ejected, 30 * time.Second},
		{tMini, Ejected, 0},
		{pAnthropic, Ejected, 30 * time.Second}, // claude's rule has scope provider
		{tClaude, Ejected, 0},
		{numTestIDs, RetryAfter, 0},
		{-1, RetryAfter, 0},
	} {
		if got := MaxDuration(c, tt.id, tt.k); got != tt.want {
			t.Errorf("MaxDuration(%d, %v) = %v, want %v", tt.id, tt.k, got, tt.want)
		}
	}
}
