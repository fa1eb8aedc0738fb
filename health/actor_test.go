package health

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/benbjohnson/clock"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// testCtx returns a context that ends the test's wait after a while instead
// of hanging; inside a synctest bubble the timeout is in fake time.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestActorReportSyncLookup(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		a := New(testCompiled(t))
		defer a.Stop()
		now := time.Now().UnixNano()

		s0 := a.Snapshot()
		if s0 == nil || !s0.Clear(tGPT4o) {
			t.Fatal("a new actor must publish an empty snapshot")
		}
		if !a.ReportRetryAfter(pOpenAI, now+int64(30*time.Second)) {
			t.Fatal("report refused")
		}
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		s1 := a.Snapshot()
		if st := s1.Lookup(tMini, now); !st.Blocked(now) || st.Until != now+int64(30*time.Second) || st.Kind != RetryAfter {
			t.Fatalf("mini: %+v", st)
		}
		if s0.Lookup(tMini, now).Blocked(now) {
			t.Fatal("an old snapshot must not change")
		}

		// A report that changes nothing publishes nothing.
		a.ReportRetryAfter(pOpenAI, now+int64(10*time.Second))
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if a.Snapshot() != s1 {
			t.Fatal("a report that changes no deadline must not publish a snapshot")
		}

		// Latency: the trigger rule runs in the actor.
		for i := range 3 {
			a.ReportLatency(tGPT4o, now+int64(i), 3, 10*time.Second, time.Minute)
		}
		blocks, err := a.Blocks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []Block{
			{ID: pOpenAI, Name: "openai", Kind: RetryAfter, Until: now + int64(30*time.Second)},
			{ID: tGPT4o, Name: "openai/gpt-4o", Kind: Latency, Until: now + 2 + int64(time.Minute)},
		}
		if len(blocks) != 2 || blocks[0] != want[0] || blocks[1] != want[1] {
			t.Fatalf("Blocks = %+v, want %+v", blocks, want)
		}
		if st := a.Snapshot().Lookup(tGPT4o, now); !st.Latency || st.Kind != Latency {
			t.Fatalf("gpt-4o: %+v", st)
		}
	})
}

func TestActorExpiryRepublishes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		// The actor's ticker starts with it; start is the same fake instant,
		// so ticks fall on start+1s, start+2s, ...
		a := New(testCompiled(t), WithExpiryInterval(time.Second))
		defer a.Stop()
		start := time.Now()
		a.ReportRetryAfter(tClaude, start.Add(5*time.Second).UnixNano())
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if a.Snapshot().Clear(tClaude) {
			t.Fatal("claude must not be clear while blocked")
		}

		time.Sleep(5*time.Second - time.Nanosecond) // fake time
		synctest.Wait()
		now := time.Now().UnixNano()
		if !a.Snapshot().Lookup(tClaude, now).Blocked(now) {
			t.Fatal("claude must still be blocked 1ns before the end")
		}

		// The block ends at start+5s; the ticker at start+5s drops it.
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		now = time.Now().UnixNano()
		s := a.Snapshot()
		if s.Lookup(tClaude, now).Blocked(now) || !s.Clear(tClaude) {
			t.Fatal("after the tick the block must be dropped and the snapshot clean")
		}
	})
}

func TestActorMockClockAndSync(t *testing.T) {
	ctx := testCtx(t)
	mock := clock.NewMock()
	mock.Set(time.Unix(1_000_000, 0))
	a := New(testCompiled(t), WithClock(mock), WithExpiryInterval(time.Hour))
	defer a.Stop()
	until := mock.Now().Add(10 * time.Second).UnixNano()
	a.ReportRetryAfter(tMistral, until)
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Snapshot().Clear(tMistral) {
		t.Fatal("mistral must be blocked")
	}
	mock.Add(10 * time.Second) // no tick is due (interval 1h): Sync expires by the clock
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !a.Snapshot().Clear(tMistral) {
		t.Fatal("Sync must drop blocks that ended by the actor's clock")
	}
}

func TestActorStop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		a := New(testCompiled(t))
		now := time.Now().UnixNano()
		until := now + int64(time.Minute)
		// Accepted before Stop, never synced: Stop must still apply it.
		if !a.ReportRetryAfter(tClaude, until) {
			t.Fatal("report refused")
		}
		a.Stop()
		a.Stop() // idempotent

		if a.ReportRetryAfter(tGPT4o, until) || a.ReportLatency(tGPT4o, now, 1, time.Second, time.Minute) {
			t.Fatal("reports after Stop must be refused")
		}
		if got := a.Dropped(); got != 2 {
			t.Fatalf("Dropped = %d, want 2", got)
		}
		s := a.Snapshot()
		if !s.Lookup(tClaude, now).Blocked(now) {
			t.Fatal("the snapshot after Stop must include every report accepted before it")
		}
		if s.Lookup(tGPT4o, now).Blocked(now) {
			t.Fatal("a refused report must not be applied")
		}
		if err := a.Sync(ctx); !errors.Is(err, ErrStopped) {
			t.Fatalf("Sync after Stop: %v", err)
		}
		if _, err := a.Blocks(ctx); !errors.Is(err, ErrStopped) {
			t.Fatalf("Blocks after Stop: %v", err)
		}
	})
}

func TestActorConcurrentStop(t *testing.T) {
	a := New(testCompiled(t))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(a.Stop)
	}
	wg.Wait()
}

func TestActorContextEnds(t *testing.T) {
	a := New(testCompiled(t))
	defer a.Stop()
	ctx, cancel := context.WithCancel(testCtx(t))
	cancel()
	if err := a.Sync(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sync with an ended context: %v", err)
	}
	if _, err := a.Blocks(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Blocks with an ended context: %v", err)
	}
}

func TestActorInvalidIDsDropped(t *testing.T) {
	a := New(testCompiled(t))
	defer a.Stop()
	if a.ReportRetryAfter(-1, 1) || a.ReportRetryAfter(numTestIDs, 1) || a.ReportLatency(numTestIDs+3, 1, 1, time.Second, time.Second) {
		t.Fatal("out-of-range identifiers must be refused")
	}
	if a.Dropped() != 3 {
		t.Fatalf("Dropped = %d, want 3", a.Dropped())
	}
}

func TestActorFullBufferCoalesces(t *testing.T) {
	// Without its goroutine the actor never drains, so the buffer fills
	// deterministically.
	a := newActor(testCompiled(t), withStripes(1), WithBuffer(4))
	for i := range 10 {
		if !a.ReportRetryAfter(tGPT4o, int64(i+1)) {
			t.Fatalf("report %d refused: a full buffer must coalesce, not drop", i)
		}
	}
	if a.Dropped() != 0 || a.Coalesced() != 6 {
		t.Fatalf("dropped %d, coalesced %d; want 0 and 6", a.Dropped(), a.Coalesced())
	}
	a.drain(true)
	if got := a.state.deadline(RetryAfter, tGPT4o); got != 10 {
		t.Fatalf("deadline %d, want the latest reported, 10", got)
	}
	if a.ReportRetryAfter(tGPT4o, 11) || a.Dropped() != 1 {
		t.Fatal("after the final drain reports must be refused and counted")
	}
}

// TestActorManyReporters has many goroutines report and read at once and
// checks, through the Sync barrier, that each sees its own reports, and at
// the end that the snapshot holds exactly the latest accepted deadline per
// identifier. Run it with -race.
func TestActorManyReporters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		c := testCompiled(t)
		a := New(c, WithBuffer(64))
		defer a.Stop()
		base := time.Now().Add(time.Hour).UnixNano()

		const workers, each = 16, 300
		var mu sync.Mutex
		latest := make([]int64, numTestIDs) // the largest accepted until per id
		refused := uint64(0)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 7))
				mine := make([]int64, numTestIDs)
				nrefused := uint64(0)
				for i := range each {
					id := r.IntN(numTestIDs)
					until := base + int64(r.IntN(1_000_000))
					if a.ReportRetryAfter(id, until) {
						mine[id] = max(mine[id], until)
					} else {
						nrefused++
					}
					tg := r.IntN(4)
					now := time.Now().UnixNano()
					_ = a.Snapshot().Lookup(tg, now).Blocked(now)
					if i%50 == 49 {
						if err := a.Sync(ctx); err != nil {
							t.Error(err)
							return
						}
						// The barrier: every deadline this goroutine had
						// accepted is now visible (or a later one).
						s := a.Snapshot()
						for tg := range 4 {
							own, prov := mine[tg], mine[c.ProviderID(tg)]
							if got := s.Lookup(tg, 0).Until; got < max(own, prov) {
								t.Errorf("worker %d target %d: Until %d < own accepted %d", w, tg, got, max(own, prov))
								return
							}
						}
					}
				}
				mu.Lock()
				for id := range latest {
					latest[id] = max(latest[id], mine[id])
				}
				refused += nrefused
				mu.Unlock()
			})
		}
		wg.Wait()
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		blocks, err := a.Blocks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]int64, numTestIDs)
		for _, b := range blocks {
			got[b.ID] = b.Until
		}
		for id := range numTestIDs {
			if got[id] != latest[id] {
				t.Errorf("id %d: until %d, want the latest accepted %d", id, got[id], latest[id])
			}
		}
		if a.Dropped() != refused {
			t.Errorf("Dropped = %d, refused = %d", a.Dropped(), refused)
		}
	})
}

func TestActorLogsTransitions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := testCtx(t)
		core, logs := observer.New(zapcore.DebugLevel)
		a := New(testCompiled(t), WithLogger(zap.New(core)))
		defer a.Stop()
		start := time.Now()
		a.ReportRetryAfter(pAnthropic, start.Add(2*time.Second).UnixNano())
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		a.ReportRetryAfter(pAnthropic, start.Add(3*time.Second).UnixNano())
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()

		var msgs []string
		for _, e := range logs.All() {
			msgs = append(msgs, e.Message)
			if e.ContextMap()["id"] != "anthropic" || e.ContextMap()["kind"] != "retry_after" {
				t.Errorf("fields: %v", e.ContextMap())
			}
		}
		want := []string{"block created", "block extended", "block expired"}
		if len(msgs) != 3 || msgs[0] != want[0] || msgs[1] != want[1] || msgs[2] != want[2] {
			t.Fatalf("logged %q, want %q", msgs, want)
		}
		created := logs.All()[0]
		if created.Level != zapcore.InfoLevel || created.ContextMap()["duration"] != 2*time.Second {
			t.Fatalf("created: %v %v", created.Level, created.ContextMap())
		}
	})
}

func TestActorOptionsDefaults(t *testing.T) {
	a := New(testCompiled(t), WithClock(nil), WithLogger(nil), WithBuffer(0), WithExpiryInterval(-1), nil)
	defer a.Stop()
	if a.interval != DefaultExpiryInterval || a.log == nil || a.clock == nil {
		t.Fatal("invalid options must keep the defaults")
	}
	total := 0
	for i := range a.reports.s {
		total += cap(a.reports.s[i].buf)
	}
	if total < DefaultBuffer {
		t.Fatalf("buffer %d, want at least %d", total, DefaultBuffer)
	}
}
