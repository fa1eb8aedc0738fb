package health

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// future returns a time far enough ahead that no block of a benchmark
// expires while it runs.
func future() int64 { return time.Now().Add(time.Hour).UnixNano() }

// BenchmarkSnapshotBlocked is the read on the request path: load the
// current snapshot, look a target up, compare with now. Two of the four
// targets are blocked.
func BenchmarkSnapshotBlocked(b *testing.B) {
	setup := func(b *testing.B) (*Actor, int64) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		a := New(testCompiled(b))
		now := time.Now().UnixNano()
		a.ReportRetryAfter(tGPT4o, future())
		a.ReportLatency(pAnthropic, now, 1, time.Second, time.Hour)
		if err := a.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		return a, now
	}
	b.Run("single", func(b *testing.B) {
		a, now := setup(b)
		defer a.Stop()
		b.ReportAllocs()
		n := 0
		for i := 0; b.Loop(); i++ {
			if a.Snapshot().Lookup(i&3, now).Blocked(now) {
				n++
			}
		}
		if n == 0 {
			b.Fatal("nothing blocked")
		}
	})
	b.Run("parallel", func(b *testing.B) {
		a, now := setup(b)
		defer a.Stop()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i, n := 0, 0
			for ; pb.Next(); i++ {
				if a.Snapshot().Lookup(i&3, now).Blocked(now) {
					n++
				}
			}
			if i > 0 && n == 0 {
				b.Error("nothing blocked")
			}
		})
	})
}

// BenchmarkReport is the caller's cost of a state-changing report, with the
// actor running and publishing. The benchmark reports far faster than any
// actor can apply (every report changes a deadline), so most reports find
// their stripe full and are coalesced into the pending table: coalesced/op
// shows the share (before the table they were dropped, at about the cost
// of an accepted report). Both the accepting and the coalescing path are
// measured on their own in BenchmarkReportPath.
func BenchmarkReport(b *testing.B) {
	b.Run("single", func(b *testing.B) {
		a := New(testCompiled(b))
		defer a.Stop()
		b.ReportAllocs()
		i, base := int64(0), future()
		for b.Loop() {
			i++
			a.ReportRetryAfter(int(i&3), base+i)
		}
		b.ReportMetric(float64(a.Dropped())/float64(b.N), "dropped/op")
		b.ReportMetric(float64(a.Coalesced())/float64(b.N), "coalesced/op")
	})
	b.Run("parallel", func(b *testing.B) {
		a := New(testCompiled(b))
		defer a.Stop()
		b.ReportAllocs()
		base := future()
		b.RunParallel(func(pb *testing.PB) {
			i := int64(0)
			for pb.Next() {
				i++
				a.ReportRetryAfter(int(i&3), base+i)
			}
		})
		b.ReportMetric(float64(a.Dropped())/float64(b.N), "dropped/op")
		b.ReportMetric(float64(a.Coalesced())/float64(b.N), "coalesced/op")
	})
}

// BenchmarkReportPath isolates the two paths of a report. accept: the
// stripe has room (each goroutine empties the stripes itself every 64
// reports, as the actor would); full: the stripe is full and the report is
// coalesced into the pending table (no actor drains it: each report raises
// the deadline of one of four identifiers, a compare-and-swap every time);
// full-same: the same, with a deadline already pending, as in a burst of
// identical Retry-After answers (a load instead of the swap).
func BenchmarkReportPath(b *testing.B) {
	b.Run("accept", func(b *testing.B) {
		a := newActor(testCompiled(b), WithBuffer(1<<14))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			spare := make([][]report, len(a.reports.s))
			for i := range spare {
				spare[i] = make([]report, 0, cap(a.reports.s[i].buf))
			}
			i := int64(0)
			for pb.Next() {
				i++
				a.ReportRetryAfter(int(i&3), i)
				if i&63 == 0 {
					for s := range a.reports.s {
						if got := a.reports.take(s, spare[s], false); got != nil {
							spare[s] = got[:0]
						}
					}
				}
			}
		})
		// Not zero only when every stripe was busy at once.
		b.ReportMetric(float64(a.Dropped())/float64(b.N), "dropped/op")
	})
	full := func(b *testing.B, until func(i int64) int64) {
		a := newActor(testCompiled(b), WithBuffer(1))
		for i := range a.reports.s {
			a.reports.putAt(uint32(i), report{})
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int64(0)
			for pb.Next() {
				i++
				a.ReportRetryAfter(int(i&3), until(i))
			}
		})
		if a.Dropped() != 0 {
			b.Fatalf("dropped %d", a.Dropped())
		}
	}
	b.Run("full", func(b *testing.B) { full(b, func(i int64) int64 { return i }) })
	b.Run("full-same", func(b *testing.B) { full(b, func(int64) int64 { return 1 }) })
}

// BenchmarkReportDesigns compares report paths on the accepting path, with
// the draining done inline as in BenchmarkReportPath: one buffered channel
// with a non-blocking send, stripes chosen at random per report
// (math/rand/v2), and stripes chosen per P (what put does). Run with
// -cpu 1,2: the channel and the random stripes do not get faster on two
// cores.
func BenchmarkReportDesigns(b *testing.B) {
	b.Run("channel", func(b *testing.B) {
		ch := make(chan report, 1<<14)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := int64(0)
			for pb.Next() {
				i++
				select {
				case ch <- report{at: i, id: int32(i & 3)}:
				default:
				}
				if i&63 == 0 {
					for n := len(ch); n > 0; n-- {
						select {
						case <-ch:
						default:
						}
					}
				}
			}
		})
	})
	stripesBench := func(b *testing.B, put func(st *stripes, r report) putResult) {
		st := newStripes(nextPow2(4), 1<<14) // as on a 2-core machine with 2x stripes: see New
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			spare := make([][]report, len(st.s))
			for i := range spare {
				spare[i] = make([]report, 0, cap(st.s[i].buf))
			}
			i := int64(0)
			for pb.Next() {
				i++
				put(&st, report{at: i, id: int32(i & 3)})
				if i&63 == 0 {
					for s := range st.s {
						if got := st.take(s, spare[s], false); got != nil {
							spare[s] = got[:0]
						}
					}
				}
			}
		})
	}
	b.Run("stripes-random", func(b *testing.B) {
		stripesBench(b, func(st *stripes, r report) putResult { return st.putAt(rand.Uint32(), r) })
	})
	b.Run("stripes-per-P", func(b *testing.B) {
		stripesBench(b, func(st *stripes, r report) putResult { return st.put(r) })
	})
}

// BenchmarkActorApply measures the actor's side of a state-changing
// report: taking it from a stripe, applying it to the State, and its share
// of the snapshot published once per batch. The loop functions run on the
// benchmark goroutine (the actor's goroutine is not started), so the
// figure is the actor's work without scheduler noise. "loop" runs the real
// goroutine and adds the caller's report and a Sync every 256 reports.
func BenchmarkActorApply(b *testing.B) {
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprint("batch=", batch), func(b *testing.B) {
			a := newActor(testCompiled(b), withStripes(1), WithBuffer(batch))
			s := &a.reports.s[0]
			b.ReportAllocs()
			i, base := int64(0), future()
			for b.Loop() {
				i++
				s.buf = append(s.buf, report{at: base + i, id: int32(i & 3)})
				if len(s.buf) == batch {
					a.drain(false)
				}
			}
			b.ReportMetric(float64(a.published)/float64(b.N), "publishes/op")
		})
	}
	b.Run("loop", func(b *testing.B) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		a := New(testCompiled(b), WithBuffer(4096))
		defer a.Stop()
		b.ReportAllocs()
		i, base := int64(0), future()
		for b.Loop() {
			i++
			a.ReportRetryAfter(int(i&3), base+i)
			if i%256 == 0 {
				if err := a.Sync(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
		if d := a.Dropped(); d != 0 {
			b.Fatalf("dropped %d", d)
		}
	})
}

// BenchmarkReportRest is BenchmarkReport/single with and without the
// actor's rest between drains (see Actor.loop). Without it the actor, on
// the other core, parks after every small batch, and the next report pays
// for waking it up.
func BenchmarkReportRest(b *testing.B) {
	for _, rest := range []time.Duration{0, defaultRest} {
		b.Run(fmt.Sprint("rest=", rest), func(b *testing.B) {
			a := New(testCompiled(b), withRest(rest))
			b.ReportAllocs()
			i, base := int64(0), future()
			for b.Loop() {
				i++
				a.ReportRetryAfter(int(i&3), base+i)
			}
			a.Stop()
			b.ReportMetric(float64(a.Dropped())/float64(b.N), "dropped/op")
			b.ReportMetric(float64(a.published)/float64(b.N), "publishes/op")
		})
	}
}
