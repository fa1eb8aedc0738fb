package bench

import (
	"cmp"
	"math/bits"
	"slices"
	"strconv"
	"time"

	"github.com/reroute-go/reroute/health"
)

// hist is a log-linear histogram of durations in microseconds, in the
// manner of HdrHistogram: values below 2^sub µs have a bin each; above,
// every power of two is split into 2^sub bins, so a quantile is exact to
// within 2^-sub of its value. Adding is a few shifts and an increment.
type hist struct {
	sub  uint
	bins []uint32
	n    int64
	max  int64 // ns, exact
}

const histMaxBits = 40 // 2^40 µs ≈ 12.7 days: longer values are clamped

func newHist(sub uint) hist {
	return hist{sub: sub, bins: make([]uint32, (histMaxBits-sub+1)<<sub)}
}

func (h *hist) index(us uint64) int {
	if us >= 1<<histMaxBits {
		us = 1<<histMaxBits - 1
	}
	if us < 1<<h.sub {
		return int(us)
	}
	e := uint(bits.Len64(us)) - h.sub - 1
	return int((uint64(e)+1)<<h.sub + (us>>e - 1<<h.sub))
}

// value returns the midpoint of bin i in nanoseconds.
func (h *hist) value(i int) int64 {
	if i < 1<<h.sub {
		return int64(i) * 1000
	}
	e := uint(i>>h.sub) - 1
	lo := (uint64(i)&(1<<h.sub-1) + 1<<h.sub) << e
	return int64(lo+(1<<e)>>1) * 1000
}

func (h *hist) add(d int64) {
	if d < 0 {
		d = 0
	}
	h.bins[h.index(uint64(d/1000))]++
	h.n++
	h.max = max(h.max, d)
}

func (h *hist) merge(o *hist) {
	for i, c := range o.bins {
		h.bins[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the q-quantile (0 < q ≤ 1) in nanoseconds: the
// smallest bin holding at least ceil(q·n) values, never above the maximum.
// 0 when the histogram is empty.
func (h *hist) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := int64(q*float64(h.n) + 0.999999)
	rank = min(max(rank, 1), h.n)
	var c int64
	for i, b := range h.bins {
		c += int64(b)
		if c >= rank {
			return min(h.value(i), h.max)
		}
	}
	return h.max
}

// recorder accumulates what a run measures: totals, per-target counts,
// latencies, and per-bucket series for the report. It is not safe for
// concurrent use: the simulation owns one; the HTTP mode guards one with a
// mutex.
type recorder struct {
	targets    []string
	attempts   []int64 // per target
	served     []int64 // per target: 2xx answers delivered
	reasons    map[string]int64
	requests   int64
	succeeded  int64
	failed     int64
	nattempts  int64
	hedges     int64 // hedges started (their attempts are in nattempts too)
	lat        hist  // latency of the requests that succeeded
	lastEnd    int64
	ser        series
	statusName [600]string // "upstream_<status>", built once
}

func newRecorder(targets []string, width time.Duration) *recorder {
	r := &recorder{
		targets:  targets,
		attempts: make([]int64, len(targets)),
		served:   make([]int64, len(targets)),
		reasons:  map[string]int64{},
		lat:      newHist(7),
		ser:      newSeries(len(targets), int64(width)),
	}
	for c := range r.statusName {
		r.statusName[c] = "upstream_" + strconv.Itoa(c)
	}
	return r
}

// Times are offsets in nanoseconds from the start of the scenario.

func (r *recorder) arrival(off int64) {
	r.requests++
	r.ser.arrivals[r.ser.bucket(off)]++
}

func (r *recorder) attempt(off int64, t int) {
	r.nattempts++
	r.attempts[t]++
	b := r.ser.bucket(off)
	r.ser.attempts[b*r.ser.nt+t]++
}

// success records a request that arrived at offset arrived and was served
// by target t at offset end. The series counts it at its arrival, so that
// a bucket tells what became of the requests that arrived in it.
func (r *recorder) success(arrived, end int64, t int) {
	r.succeeded++
	r.served[t]++
	r.lat.add(end - arrived)
	b := r.ser.bucket(arrived)
	r.ser.succeeded[b]++
	r.ser.lat[b].add(end - arrived)
	r.lastEnd = max(r.lastEnd, end)
}

// failure records a request that arrived at offset arrived and failed at
// offset end for reason.
func (r *recorder) failure(arrived, end int64, reason string) {
	r.failed++
	r.reasons[reason]++
	r.ser.failed[r.ser.bucket(arrived)]++
	r.lastEnd = max(r.lastEnd, end)
}

// passThrough names a delivered non-2xx answer.
func (r *recorder) passThrough(status int) string {
	if status >= 0 && status < len(r.statusName) {
		return r.statusName[status]
	}
	return "upstream_" + strconv.Itoa(status)
}

// series is the per-bucket view of a run over scenario time. Buckets start
// narrow and double in width (merging pairs) whenever the run outgrows
// maxBuckets, so memory stays bounded whatever the scenario's length.
type series struct {
	width     int64 // ns per bucket
	nt        int
	arrivals  []int64
	succeeded []int64
	failed    []int64
	attempts  []int64 // bucket*nt + target
	lat       []hist  // latency of successes, per bucket
	spans     []blockSpan
}

const maxBuckets = 400

// seriesSub is the per-bucket histogram precision: 2^-4 ≈ 6 %, plenty for
// a chart, at 2 KB a bucket.
const seriesSub = 4

func newSeries(nt int, width int64) series {
	return series{width: max(width, int64(time.Millisecond)), nt: nt}
}

// bucket returns the index of the bucket holding offset off, growing or
// coarsening the series as needed.
func (s *series) bucket(off int64) int {
	if off < 0 {
		off = 0
	}
	b := off / s.width
	for b >= maxBuckets {
		s.coarsen()
		b = off / s.width
	}
	for int64(len(s.arrivals)) <= b {
		s.arrivals = append(s.arrivals, 0)
		s.succeeded = append(s.succeeded, 0)
		s.failed = append(s.failed, 0)
		for range s.nt {
			s.attempts = append(s.attempts, 0)
		}
		s.lat = append(s.lat, newHist(seriesSub))
	}
	return int(b)
}

// coarsen doubles the bucket width, merging buckets pairwise.
func (s *series) coarsen() {
	n := len(s.arrivals)
	m := (n + 1) / 2
	for i := range m {
		j := 2 * i
		s.arrivals[i] = s.arrivals[j]
		s.succeeded[i] = s.succeeded[j]
		s.failed[i] = s.failed[j]
		copy(s.attempts[i*s.nt:(i+1)*s.nt], s.attempts[j*s.nt:(j+1)*s.nt])
		if i != j {
			s.lat[i] = s.lat[j]
		}
		if j+1 < n {
			s.arrivals[i] += s.arrivals[j+1]
			s.succeeded[i] += s.succeeded[j+1]
			s.failed[i] += s.failed[j+1]
			for t := range s.nt {
				s.attempts[i*s.nt+t] += s.attempts[(j+1)*s.nt+t]
			}
			s.lat[i].merge(&s.lat[j+1])
		}
	}
	s.arrivals, s.succeeded, s.failed = s.arrivals[:m], s.succeeded[:m], s.failed[:m]
	s.attempts = s.attempts[:m*s.nt]
	// The histograms past m are aliases of those before (moved by value):
	// drop them, new buckets get fresh ones.
	clear(s.lat[m:])
	s.lat = s.lat[:m]
	s.width *= 2
}

// blockSpan is a stretch of scenario time during which a block was seen
// live in the shared health state.
type blockSpan struct {
	Name string // target id or provider name
	Kind health.Kind
	From int64 // ns from the start of the scenario
	To   int64
}

// blocks records the blocks live at offset off (a sample of
// health.State.Blocks or health.Actor.Blocks); base is the unix time in
// nanoseconds of the scenario's start. A block live at off with
// deadline Until is live from off until Until: blocks only get longer
// (max-expiration), so the span is exact but for the sampling delay of its
// start.
func (s *series) blocks(off int64, live []health.Block, base int64) {
	for _, b := range live {
		to := b.Until - base
		if i := s.lastSpan(b.Name, b.Kind); i >= 0 && s.spans[i].To >= off {
			s.spans[i].To = max(s.spans[i].To, to)
			continue
		}
		s.spans = append(s.spans, blockSpan{Name: b.Name, Kind: b.Kind, From: off, To: to})
	}
	// A span still running by its end that is no longer live ended early:
	// another replica's recovery (shared health) ended the ejection.
	for i := range s.spans {
		sp := &s.spans[i]
		if sp.To <= off || s.lastSpan(sp.Name, sp.Kind) != i {
			continue
		}
		if !slices.ContainsFunc(live, func(b health.Block) bool { return b.Name == sp.Name && b.Kind == sp.Kind }) {
			sp.To = off
		}
	}
}

func (s *series) lastSpan(name string, k health.Kind) int {
	for i := len(s.spans) - 1; i >= 0; i-- {
		if s.spans[i].Name == name && s.spans[i].Kind == k {
			return i
		}
	}
	return -1
}

// sortedSpans returns the spans ordered by name, kind, start.
func (s *series) sortedSpans() []blockSpan {
	out := slices.Clone(s.spans)
	slices.SortStableFunc(out, func(a, b blockSpan) int {
		switch {
		case a.Name != b.Name:
			if a.Name < b.Name {
				return -1
			}
			return 1
		case a.Kind != b.Kind:
			return int(a.Kind) - int(b.Kind)
		}
		return cmp.Compare(a.From, b.From)
	})
	return out
}
