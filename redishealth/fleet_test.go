package redishealth

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/redishealth/redistest"
)

// The fleet's failures count together (consecutive_failures: 2): one
// failure on A and one on B eject the target on B, which shares the
// ejection; a success on B between them breaks the streak for A too.
func TestFleetStreakEjects(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv, baseConfig), newReplica(t, srv, baseConfig)
	a.waitConnected(t)
	b.waitConnected(t)
	ctx := testCtx(t)

	now := nowNs()
	a.a.ReportFailure(tGPT4o, now)
	if f := b.next(t); !f.Strike || f.Name != "openai/gpt-4o" || !near(f.Until, now) {
		t.Fatalf("B imported %+v, want A's strike", f)
	}
	if !b.a.Snapshot().Attention(tGPT4o) {
		t.Fatal("B does not report successes of a target with the fleet's streak")
	}
	b.a.ReportFailure(tGPT4o, nowNs())
	if err := b.a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := b.a.Snapshot().Lookup(tGPT4o, nowNs()); !st.Ejected {
		t.Fatalf("B after the fleet's second failure in a row: %+v", st)
	}
	if f := a.next(t); f.Kind != health.Ejected || f.Strike || f.Ejections != 1 {
		t.Fatalf("A imported %+v, want B's ejection", f)
	}
	if st := a.a.Snapshot().Lookup(tGPT4o, nowNs()); !st.Ejected {
		t.Fatalf("A after B's ejection: %+v", st)
	}

	// A success on B between two failures on A: no ejection.
	a.a.ReportFailure(tMini, nowNs())
	if f := b.next(t); !f.Strike || f.Name != "openai/gpt-4o-mini" {
		t.Fatalf("B imported %+v, want A's strike on gpt-4o-mini", f)
	}
	b.a.ReportSuccess(tMini, nowNs())
	if f := a.next(t); !f.Clear || f.Name != "openai/gpt-4o-mini" {
		t.Fatalf("A imported %+v, want B's clear", f)
	}
	a.a.ReportFailure(tMini, nowNs())
	if err := a.a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.a.Snapshot().Lookup(tMini, nowNs()); st.Ejected {
		t.Fatalf("gpt-4o-mini ejected across a success: %+v", st)
	}
}

// A reconnection writes a live ejection back with its number, not as a
// first ejection: a replica that loads it doubles the same cooldown.
func TestReconnectKeepsEjectionNumbers(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv, baseConfig)
	a.waitConnected(t)
	ctx := testCtx(t)
	// Applied by A's actor as another replica's: not published now, but
	// live, and so written back at the reconnection.
	if err := a.a.Import(health.Fact{Name: "openai/gpt-4o", Kind: health.Ejected, Until: nowNs() + 3*sec, Ejections: 3}); err != nil {
		t.Fatal(err)
	}
	if err := a.a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	waitFor(t, "A to reconnect", func() bool { return a.s.Stats().Connects >= 2 && a.s.Stats().Connected })
	raw := rawClient(t, srv)
	v, err := raw.Get(ctx, "reroute:fact:ejected:t:openai/gpt-4o").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var w wireFact
	if err := json.Unmarshal(v, &w); err != nil || w.E != 3 {
		t.Fatalf("stored %s (%v), want the third ejection", v, err)
	}
	b := newReplica(t, srv, baseConfig)
	b.waitConnected(t)
	bs, err := b.a.Blocks(ctx)
	if err != nil || len(bs) != 1 || bs[0].Ejections != 3 {
		t.Fatalf("B loaded %+v (%v), want the third ejection", bs, err)
	}
}

// A recovery made while Redis is down is replayed at the reconnection:
// the other replica's ejection of the target ends then, not when it runs
// out and that replica probes on its own.
func TestRecoveryReplayedAfterReconnect(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv, baseConfig), newReplica(t, srv, baseConfig)
	a.waitConnected(t)
	b.waitConnected(t)
	ctx := testCtx(t)
	now := nowNs()
	a.a.ReportFailure(tGPT4o, now)
	a.a.ReportFailure(tGPT4o, now)
	b.next(t) // the strike
	if f := b.next(t); f.Kind != health.Ejected || f.Strike {
		t.Fatalf("B imported %+v, want the ejection", f)
	}
	srv.Stop()
	waitFor(t, "both to notice", func() bool { return !a.s.Stats().Connected && !b.s.Stats().Connected })
	// A's probe succeeds after the cooldown (the report carries its
	// time): A recovers; the recovery cannot be sent.
	_, until := ejection(t, a.a, tGPT4o)
	a.a.ReportSuccess(tGPT4o, until+1)
	if err := a.a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := a.a.Snapshot().Lookup(tGPT4o, until+1); st.Ejected {
		t.Fatal("A did not recover")
	}
	waitFor(t, "the recovery to be counted unsent", func() bool { return a.s.Stats().Unsent >= 1 })
	if n, _ := ejection(t, b.a, tGPT4o); n == 0 {
		t.Fatal("B recovered without A's message")
	}

	srv.Restart()
	waitFor(t, "B to learn A's recovery", func() bool {
		n, _ := ejection(t, b.a, tGPT4o)
		return n == 0
	})
	// B may hear of the replay before A has counted it.
	waitFor(t, "A to count the replay", func() bool { return a.s.Stats().Replayed >= 1 })
	if st := a.s.Stats(); st.Replayed != 1 {
		t.Errorf("replayed %d recoveries, want 1", st.Replayed)
	}
}

// ejection returns identifier id's ejection number on a (0: healthy) and
// its end, from a's blocks and snapshot.
func ejection(t *testing.T, a *health.Actor, id int) (n int, until int64) {
	t.Helper()
	if err := a.Sync(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	st := a.Snapshot().Lookup(id, 0)
	if !st.Ejected {
		return 0, 0
	}
	return 1, st.EjectedUntil
}

// The replay supersedes a stored ejection made before the recovery (it
// ends within 0.8 × the 1 s cooldown of it), never one that may be newer.
func TestReplaySupersedesOnlyOlderEjections(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv, baseConfig)
	a.waitConnected(t)
	ctx := testCtx(t)
	raw := rawClient(t, srv)
	const key = "reroute:fact:ejected:t:openai/gpt-4o"
	stored := `{"n":"openai/gpt-4o","k":"ejected","e":1}`
	recovery := wireFact{Name: "openai/gpt-4o", Kind: kindRecovered}
	sub := raw.Subscribe(ctx, "reroute:health")
	defer func() { _ = sub.Close() }()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	// Ends 5 s from now: may be newer than a recovery just made. Kept.
	if err := raw.Set(ctx, key, stored, 5*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	a.s.unsentRecoveries.keep(a.s, []wireFact{recovery}, nowNs())
	if err := a.s.replay(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if n, _ := raw.Exists(ctx, key).Result(); n != 1 || a.s.Stats().Replayed != 0 {
		t.Fatalf("a stored ejection that may be newer was superseded (exists %d, replayed %d)", n, a.s.Stats().Replayed)
	}

	// Ends 300 ms from now: made before a recovery made now. Deleted, and
	// the recovery published.
	if err := raw.Set(ctx, key, stored, 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	a.s.unsentRecoveries.keep(a.s, []wireFact{recovery}, nowNs())
	if err := a.s.replay(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if n, _ := raw.Exists(ctx, key).Result(); n != 0 || a.s.Stats().Replayed != 1 {
		t.Fatalf("an older stored ejection was kept (exists %d, replayed %d)", n, a.s.Stats().Replayed)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := decodeMessage([]byte(msg.Payload))
	if err != nil || m.R != a.s.ReplicaID() || len(m.Facts) != 1 || m.Facts[0].Kind != kindRecovered {
		t.Fatalf("published %s (%v), want A's recovery", msg.Payload, err)
	}
}

// The probe lock's key names the identifier, not the ejection's number,
// and its holder releases it with its probe's outcome (here a recovery);
// a lock another replica holds is left alone.
func TestProbeLockReleasedByTheOutcome(t *testing.T) {
	for _, holder := range []string{"self", "another-replica"} {
		srv := redistest.Start(t)
		a := newReplica(t, srv, baseConfig)
		a.waitConnected(t)
		ctx := testCtx(t)
		raw := rawClient(t, srv)
		const lock = "reroute:probe:t:openai/gpt-4o"
		id := holder
		if holder == "self" {
			id = a.s.ReplicaID()
		}
		now := nowNs()
		a.a.ReportFailure(tGPT4o, now)
		a.a.ReportFailure(tGPT4o, now)
		_, until := ejection(t, a.a, tGPT4o)
		waitFor(t, "the strike and the ejection to be sent", func() bool { return a.s.Stats().FactsSent == 2 })
		if err := raw.Set(ctx, lock, id, 10*time.Second).Err(); err != nil {
			t.Fatal(err)
		}
		a.a.ReportSuccess(tGPT4o, until+1)
		waitFor(t, "the recovery to be sent", func() bool { return a.s.Stats().FactsSent == 3 })
		n, err := raw.Exists(ctx, lock).Result()
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]int64{"self": 0, "another-replica": 1}[holder]; n != want {
			t.Errorf("lock held by %s: %d left after the recovery, want %d", holder, n, want)
		}
	}
}

// A recovery whose send failed while the connection stayed up is replayed
// after the next batch published, not only at a reconnection; one that
// this replica's own later ejection superseded is not.
func TestRecoveryReplayedAfterTheNextSend(t *testing.T) {
	srv := redistest.Start(t)
	a, b := newReplica(t, srv, baseConfig), newReplica(t, srv, baseConfig)
	a.waitConnected(t)
	b.waitConnected(t)
	if err := b.a.Import(health.Fact{Name: "openai/gpt-4o", Kind: health.Ejected, Until: nowNs() + 3*sec, Ejections: 1}); err != nil {
		t.Fatal(err)
	}
	recovery := wireFact{Name: "openai/gpt-4o", Kind: kindRecovered}
	a.s.unsentRecoveries.keep(a.s, []wireFact{recovery}, nowNs())
	superseded := wireFact{Name: "openai/gpt-4o-mini", Kind: kindRecovered}
	a.s.unsentRecoveries.keep(a.s, []wireFact{superseded, {Name: "openai/gpt-4o-mini", Kind: kindEjected, D: sec, E: 1}}, nowNs())
	a.a.ReportRetryAfter(tClaude, nowNs()+30*sec)
	waitFor(t, "B to learn the recovery", func() bool {
		n, _ := ejection(t, b.a, tGPT4o)
		return n == 0
	})
	// B may hear of the replay before A has counted it.
	waitFor(t, "A to count the replay", func() bool { return a.s.Stats().Replayed >= 1 })
	if st := a.s.Stats(); st.Replayed != 1 {
		t.Errorf("replayed %d, want 1 (gpt-4o's; gpt-4o-mini's was superseded)", st.Replayed)
	}
}

// Strikes and clears are published in messages of their own, so that a
// replica that does not know them (an earlier version refuses the whole
// message) still gets the ejection made in the same batch.
func TestStrikesInMessagesOfTheirOwn(t *testing.T) {
	srv := redistest.Start(t)
	a := newReplica(t, srv, baseConfig)
	a.waitConnected(t)
	ctx := testCtx(t)
	raw := rawClient(t, srv)
	sub := raw.Subscribe(ctx, "reroute:health")
	defer func() { _ = sub.Close() }()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	now := nowNs()
	a.a.ReportFailure(tGPT4o, now)
	a.a.ReportFailure(tGPT4o, now)
	kinds := map[string]int{}
	for len(kinds) < 2 {
		msg, err := sub.ReceiveMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m, _, err := decodeMessage([]byte(msg.Payload))
		if err != nil {
			t.Fatal(err)
		}
		events := 0
		for _, f := range m.Facts {
			kinds[f.Kind]++
			if f.event() {
				events++
			}
		}
		if events != 0 && events != len(m.Facts) {
			t.Fatalf("a message mixes strikes with other facts: %s", msg.Payload)
		}
	}
	if kinds[kindStrike] != 1 || kinds[kindEjected] != 1 {
		t.Fatalf("kinds received %v, want a strike and an ejection", kinds)
	}
}

// A replica that missed a recovery's message (it was not subscribed when
// it went out) finds the recovery's mark at its next connection: its own
// copy of the ejection, which began before the recovery, is ended rather
// than written back; an ejection that may be newer than the mark is kept.
func TestRecoveryMarkEndsAMissedEjection(t *testing.T) {
	srv := redistest.Start(t)
	b := newReplica(t, srv, baseConfig)
	b.waitConnected(t)
	ctx := testCtx(t)
	now := nowNs()
	// Ejected for 1 s (the first cooldown) and for 3 s; the recovery
	// mark says a probe succeeded at the end of the first (another
	// replica probed when the shared ejection ended). The second ends
	// later than a cooldown after that, so it may be newer.
	for _, f := range []health.Fact{
		{Name: "openai/gpt-4o", Kind: health.Ejected, Until: now + sec, Ejections: 1},
		{Name: "openai/gpt-4o-mini", Kind: health.Ejected, Until: now + 3*sec, Ejections: 2},
	} {
		if err := b.a.Import(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	raw := rawClient(t, srv)
	for _, name := range []string{"openai/gpt-4o", "openai/gpt-4o-mini"} {
		if err := raw.Set(ctx, "reroute:recovered:t:"+name, strconv.FormatInt(now+sec, 10), time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.s.resync(); err != nil {
		t.Fatal(err)
	}
	if err := b.a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := ejection(t, b.a, tGPT4o); n != 0 {
		t.Error("gpt-4o's ejection began before the recovery and was kept")
	}
	if n, _ := ejection(t, b.a, tMini); n == 0 {
		t.Error("gpt-4o-mini's ejection may be newer than the recovery and was ended")
	}
	if left, err := raw.Exists(ctx, "reroute:fact:ejected:t:openai/gpt-4o").Result(); err != nil || left != 0 {
		t.Errorf("gpt-4o's ended ejection was written back (%d keys, %v)", left, err)
	}
	if left, err := raw.Exists(ctx, "reroute:fact:ejected:t:openai/gpt-4o-mini").Result(); err != nil || left != 1 {
		t.Errorf("gpt-4o-mini's live ejection was not written back (%d keys, %v)", left, err)
	}
}
