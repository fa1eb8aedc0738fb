package health

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/reroute-go/reroute/policy"
)

// TTFBRing is how many recent times to first token TTFBWindow keeps per
// target: enough for a 99th percentile to mean something, few enough that
// sorting them once a second costs a few microseconds.
const TTFBRing = 128

// TTFBWindow keeps, per target, the last TTFBRing times to first token
// reported for it and computes their percentiles: the delay of a hedge
// with delay_percentile (docs/behaviour.md#hedging). It is a pure core like
// State: no goroutines, no clock, not safe for concurrent use. The health
// actor owns one and publishes its Table; the zero value and a nil window
// keep nothing.
//
// Memory is bounded: one ring of TTFBRing int64s per target that has
// reported, allocated at its first report, and one table.
type TTFBWindow struct {
	pcts  []float64
	rings [][]int64 // per target, nil until its first sample
	next  []int32   // per target: where the next sample goes
	count []int32   // per target: samples held, ≤ TTFBRing
	dirty []int32   // targets observed since the last Table
	isDir []bool
	last  *TTFBTable
	sort  []int64 // scratch
}

// NewTTFBWindow returns the window for c's targets and c.TTFBPercentiles,
// or nil when c has no percentile to keep (no policy hedges by one).
func NewTTFBWindow(c *policy.Compiled) *TTFBWindow {
	if len(c.TTFBPercentiles) == 0 {
		return nil
	}
	n := c.NumTargets()
	w := &TTFBWindow{
		pcts:  slices.Clone(c.TTFBPercentiles),
		rings: make([][]int64, n),
		next:  make([]int32, n),
		count: make([]int32, n),
		isDir: make([]bool, n),
		sort:  make([]int64, 0, TTFBRing),
	}
	w.last = &TTFBTable{k: len(w.pcts), vals: make([]time.Duration, n*len(w.pcts)), count: make([]int32, n)}
	return w
}

// Observe records a time to first token d of target t. A t out of range or
// a d ≤ 0 is ignored.
func (w *TTFBWindow) Observe(t int, d time.Duration) {
	if w == nil || t < 0 || t >= len(w.rings) || d <= 0 {
		return
	}
	r := w.rings[t]
	if r == nil {
		r = make([]int64, TTFBRing)
		w.rings[t] = r
	}
	r[w.next[t]] = int64(d)
	w.next[t] = (w.next[t] + 1) % TTFBRing
	w.count[t] = min(w.count[t]+1, TTFBRing)
	if !w.isDir[t] {
		w.isDir[t] = true
		w.dirty = append(w.dirty, t32(t))
	}
}

// t32 narrows a target index: indices are below NumTargets, which a
// configuration keeps far under 2³¹.
func t32(t int) int32 { return int32(t) }

// Table returns the percentiles of every target as they stand: the last
// table when nothing was observed since, else a new one that recomputes
// only the targets observed since. A nil window's table is nil.
func (w *TTFBWindow) Table() *TTFBTable {
	if w == nil {
		return nil
	}
	if len(w.dirty) == 0 {
		return w.last
	}
	tb := &TTFBTable{k: w.last.k, vals: slices.Clone(w.last.vals), count: slices.Clone(w.last.count)}
	for _, t := range w.dirty {
		w.isDir[t] = false
		n := int(w.count[t])
		w.sort = append(w.sort[:0], w.rings[t][:n]...)
		slices.Sort(w.sort)
		for k, p := range w.pcts {
			tb.vals[int(t)*tb.k+k] = time.Duration(w.sort[rank(p, n)])
		}
		tb.count[t] = int32(n) // n ≤ TTFBRing
	}
	w.dirty = w.dirty[:0]
	w.last = tb
	return tb
}

// rank is the index of percentile p among n sorted samples: the nearest
// rank, ⌈p/100 × n⌉ - 1.
func rank(p float64, n int) int {
	i := int(p / 100 * float64(n))
	if float64(i) < p/100*float64(n) {
		i++
	}
	return min(max(i-1, 0), n-1)
}

// TTFBTable is an immutable table of the percentiles of time to first
// token per target. A nil table knows nothing.
type TTFBTable struct {
	k     int // percentiles per target
	vals  []time.Duration
	count []int32
}

// Percentile returns the k-th percentile (of Compiled.TTFBPercentiles) of
// target t, and whether at least policy.HedgeMinSamples samples are behind
// it. Safe for concurrent use.
func (tb *TTFBTable) Percentile(t, k int) (time.Duration, bool) {
	if tb == nil || t < 0 || t >= len(tb.count) || k < 0 || k >= tb.k {
		return 0, false
	}
	return tb.vals[t*tb.k+k], tb.count[t] >= policy.HedgeMinSamples
}

// ttfbFeed is the actor's side of the TTFB window: a buffered channel
// reporters send into without waiting (a full one drops and counts), the
// window the loop owns, and the table it publishes once per tick and on
// Sync. A separate channel rather than the report stripes: samples are
// many and each is worthless alone, so losing some under a burst is
// harmless, and they never delay a block.
type ttfbFeed struct {
	c       chan ttfbReport
	table   atomic.Pointer[TTFBTable]
	dropped atomic.Uint64
	w       *TTFBWindow // owned by the loop
}

type ttfbReport struct {
	t int32
	d time.Duration
}

func newTTFBFeed(c *policy.Compiled, buffer int) *ttfbFeed {
	w := NewTTFBWindow(c)
	if w == nil {
		return nil
	}
	f := &ttfbFeed{c: make(chan ttfbReport, max(buffer, 1)), w: w}
	f.table.Store(w.Table())
	return f
}

// ReportTTFB reports a time to first token d of target t, for the
// percentile a hedge's delay follows. It never waits: a full buffer drops
// the sample (counted in Dropped). It returns false when the sample is
// dropped or the configuration keeps no percentile.
func (a *Actor) ReportTTFB(t int, d time.Duration) bool {
	f := a.ttfb
	if f == nil {
		return false
	}
	select {
	case <-a.life.Stopping():
		f.dropped.Add(1)
		return false
	default:
	}
	select {
	case f.c <- ttfbReport{t32(t), d}:
		return true
	default:
		f.dropped.Add(1)
		return false
	}
}

// TTFB returns the k-th of Compiled.TTFBPercentiles of target t's recent
// times to first token, as last published (once per expiry interval, and
// by Sync), and whether enough samples are behind it. One atomic load;
// never waits.
func (a *Actor) TTFB(t, k int) (time.Duration, bool) {
	if a.ttfb == nil {
		return 0, false
	}
	return a.ttfb.table.Load().Percentile(t, k)
}

// TTFBDropped counts the samples ReportTTFB dropped.
func (a *Actor) TTFBDropped() uint64 {
	if a.ttfb == nil {
		return 0
	}
	return a.ttfb.dropped.Load()
}

// ttfbc is the loop's channel of samples; nil, never ready, when the
// configuration keeps no percentile.
func (a *Actor) ttfbc() <-chan ttfbReport {
	if a.ttfb == nil {
		return nil
	}
	return a.ttfb.c
}

// ttfbTake applies r and whatever else is buffered, without waiting.
func (a *Actor) ttfbTake(r ttfbReport) {
	f := a.ttfb
	f.w.Observe(int(r.t), r.d)
	for {
		select {
		case r := <-f.c:
			f.w.Observe(int(r.t), r.d)
		default:
			return
		}
	}
}

// ttfbPublish drains the samples buffered and publishes the table if it
// changed.
func (a *Actor) ttfbPublish() {
	f := a.ttfb
	if f == nil {
		return
	}
	select {
	case r := <-f.c:
		a.ttfbTake(r)
	default:
	}
	if tb := f.w.Table(); tb != f.table.Load() {
		f.table.Store(tb)
	}
}
