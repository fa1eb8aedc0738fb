package health

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// report is one fire-and-forget message to the actor. minTriggers doubles
// as the kind (0 = retry-after, ≥ 1 = latency event, kindSuccess and
// kindFailure for passive health) so that a report is 32 bytes, two to a
// cache line.
// The passive-health kinds of report.
const (
	kindSuccess int32 = -1 // at: when
	kindFailure int32 = -2 // at: when
)

type report struct {
	at          int64 // retry-after: end of the block; latency: time of the event
	window      time.Duration
	block       time.Duration
	id          int32
	minTriggers int32
}

// stripe is one of the report buffers. Reporters append under mu; the
// actor swaps buf for an empty one under mu and applies the batch outside
// it, so the lock is held for a few nanoseconds on either side.
type stripe struct {
	mu     sync.Mutex
	closed bool     // set by the actor's final drain; reports are refused from then on
	buf    []report // len ≤ cap: cap is the stripe's share of the buffer
	// refused counts reports refused because the stripe was closed;
	// overflowed counts reports that found it full (or every stripe busy)
	// and went to the pending table. Per stripe, so that counting costs no
	// shared cache line.
	refused    atomic.Uint64
	overflowed atomic.Uint64
	// Stripes sit side by side in one array; keep each on its own pair of
	// cache lines (the adjacent-line prefetcher pulls lines in pairs) so
	// that reporters on different cores do not invalidate each other.
	_ [128 - 8 - 8 - 24 - 8 - 8]byte
}

// stripes is the ordinary report path: a small array of mutex-guarded
// buffers and a one-slot doorbell channel that wakes the actor once per
// batch. What does not fit goes to the pending table (see pending).
//
// Why not one buffered channel? A non-blocking channel send is ~16 ns
// alone, but every sender on every core takes the same channel lock, so
// with two cores reporting it gets slower, not faster (docs/architecture.md#the-report-path). Here a
// reporter appends to the stripe of the core it runs on (see token), so
// two cores rarely meet on one lock or one cache line, and it touches the
// shared doorbell only when its stripe was empty, which under load is once
// per batch rather than once per report.
type stripes struct {
	s        []stripe
	mask     uint32
	doorbell chan struct{} // capacity 1; a token means "some stripe, or the pending table, may be non-empty"
}

// token is a stripe hint that stays with one P (scheduler processor):
// sync.Pool keeps a per-P private slot, so the goroutines running on a core
// keep getting the same token back and so append to the same stripe, whose
// cache line then stays in that core's cache. xsync.Counter does the same.
// A random stripe per report (math/rand/v2's per-thread generator, ~1 ns)
// was measured and rejected: with two cores every stripe's line bounced
// between them and RunParallel on 2 cores was slower than on one.
type token struct{ idx uint32 }

var (
	tokens    sync.Pool
	nextToken atomic.Uint32
)

func newStripes(n, buffer int) stripes {
	n = nextPow2(n)
	per := max(1, (buffer+n-1)/n)
	st := stripes{s: make([]stripe, n), mask: uint32(n - 1), doorbell: make(chan struct{}, 1)}
	for i := range st.s {
		st.s[i].buf = make([]report, 0, per)
	}
	return st
}

// putResult is what became of a report offered to the stripes.
type putResult uint8

const (
	putOK     putResult = iota // appended; the actor will apply it
	putFull                    // not appended: the stripe was full or every stripe busy; counted as overflowed
	putClosed                  // refused for good: the actor has stopped; counted as refused
)

// put offers r without ever waiting: a stripe whose lock is taken is
// skipped (TryLock) rather than waited for. On putFull the caller passes
// the report to the pending table.
func (st *stripes) put(r report) putResult { return st.putAt(hint(), r) }

// hint returns the stripe hint of the P the caller runs on (see token).
func hint() uint32 {
	tok, _ := tokens.Get().(*token)
	if tok == nil {
		tok = &token{idx: nextToken.Add(1) - 1}
	}
	h := tok.idx
	tokens.Put(tok)
	return h
}

// putAt is put starting at stripe h (modulo the number of stripes).
func (st *stripes) putAt(h uint32, r report) putResult {
	// Two rounds: TryLock also fails, spuriously, when the lock word is
	// merely being updated by someone else.
	for i := uint32(0); i < 2*(st.mask+1); i++ {
		s := &st.s[(h+i)&st.mask]
		if !s.mu.TryLock() {
			continue
		}
		n := len(s.buf)
		switch {
		case s.closed:
			s.mu.Unlock()
			s.refused.Add(1)
			return putClosed
		case n == cap(s.buf):
			s.mu.Unlock()
			s.overflowed.Add(1)
			return putFull
		}
		s.buf = s.buf[:n+1]
		s.buf[n] = r
		s.mu.Unlock()
		if n == 0 {
			// The stripe was empty, so the actor may be asleep with nothing
			// to wake it. If a token is already waiting this costs a load.
			st.ring()
		}
		return putOK
	}
	// Every stripe was being appended to or swapped at this very moment (or
	// its holder was preempted): the pending table takes the report.
	st.s[h&st.mask].overflowed.Add(1)
	return putFull
}

// ring leaves a token in the doorbell unless one is already there.
func (st *stripes) ring() {
	select {
	case st.doorbell <- struct{}{}:
	default:
	}
}

// take swaps stripe i's buffer for spare (which must be empty and of the
// same capacity) and returns the filled one. If final, the stripe is closed
// for good in the same critical section, so that every report accepted
// before is in the returned batch and none is accepted after.
func (st *stripes) take(i int, spare []report, final bool) []report {
	s := &st.s[i]
	s.mu.Lock()
	batch := s.buf
	if len(batch) == 0 {
		s.closed = s.closed || final
		s.mu.Unlock()
		return nil
	}
	s.buf = spare[:0]
	s.closed = s.closed || final
	s.mu.Unlock()
	return batch
}

// refused returns how many reports the closed stripes refused.
func (st *stripes) refused() uint64 {
	var n uint64
	for i := range st.s {
		n += st.s[i].refused.Load()
	}
	return n
}

// overflowed returns how many reports went to the pending table.
func (st *stripes) overflowed() uint64 {
	var n uint64
	for i := range st.s {
		n += st.s[i].overflowed.Load()
	}
	return n
}

func nextPow2(n int) int {
	p := 1
	for p < n && p < math.MaxInt32/2 {
		p <<= 1
	}
	return p
}

// pending is where a report goes when its stripe is full: a table with one
// slot per identifier, into which reports of the same identifier coalesce,
// written with atomics and drained by the actor. It is what makes a burst
// (thousands of targets answering 429 at once, hundreds of slow answers on
// one target) lose nothing while memory stays bounded by the configuration
// and the report path never waits.
//
// What a slot keeps, and why that is enough:
//
//   - Retry-After: the latest deadline reported (an atomic max). Blocks are
//     max-expiration, so the latest deadline is all the State would keep of
//     any number of Retry-After reports: coalescing them loses nothing, and
//     a Retry-After, an instruction from the provider, is never dropped for
//     lack of room.
//   - Latency: the number n of events and their earliest and latest times
//     (lo, hi), for one trigger rule. The actor applies them as n events at
//     hi (at most 2·min_triggers-1 calls: n ≥ m events at one instant
//     trigger once and leave n mod m). While hi-lo is shorter than the
//     rule's window, which holds unless the actor was away a whole window,
//     every event is inside the window at hi, so the coalesced events block
//     whenever the exact ones would at their last event, never when they
//     would not, and the block runs from hi: up to hi-lo (a drain period,
//     about a millisecond) longer than it might have. If hi-lo ≥ window,
//     only the events at lo and hi are applied and the n-2 between are
//     counted as lost: where they fell is not known.
//
// A slot holds one rule at a time, numbered by the distinct
// (min_triggers, window, block) triples of the configuration. A latency
// report whose rule differs from the one its identifier's slot already
// holds in this generation (a provider-scope identifier shared by policies
// with different rules, in the same burst), or whose rule is not in the
// configuration, is refused and counted: that and the stopped actor are the
// drops that remain.
//
// Two generations, so that reporters never wait for the actor: reporters
// write into the current one; the actor flips epoch to the other and then
// waits (yielding) until no reporter is still inside the old one, reads it
// and clears it. A reporter announces itself in the generation's inflight
// counter of its stripe and then checks that epoch has not moved; the actor moves epoch
// and then reads inflight. Both are sequentially consistent atomics, so one
// of the two always sees the other: either the reporter sees the new epoch
// and retries there, or the actor waits for it. The actor may wait for a
// reporter's few nanoseconds of atomics; a reporter never waits for the
// actor. The max and min updates are compare-and-swap loops that retry only
// when another reporter moved the same word at that instant: lock-free,
// not wait-free, like every atomic counter.
//
// Designs measured or weighed and rejected:
//
//   - Larger stripes. A burst is as large as the number of targets times
//     the concurrency; any fixed buffer is too small for one configuration
//     and waste for another. The table is sized by what is being reported
//     on, the identifiers, so it fits every burst.
//   - Blocking, or spinning, when full: the request path must not wait for
//     the actor, and under a burst the actor is exactly what is busy.
//   - One generation with a lock per slot (TryLock, drop when busy): a
//     burst on one identifier is what makes its lock busy, so it would drop
//     the very reports the table exists for.
//   - Keeping every latency event time: unbounded. Keeping the k latest
//     (as the State's ring does) is not enough either: the State's ring can
//     keep the k latest only because it applies the threshold on every
//     event, which the table does not; count, lo and hi are exact for what
//     a burst within a window needs.
//   - Coalescing on every report, stripes removed: slower on the ordinary
//     path (every report of one identifier would meet on one cache line,
//     and the actor would scan every identifier per drain), for no gain
//     when the stripes have room.
//
// The stripes stay the ordinary path: BenchmarkReport measures it
// unchanged, and BenchmarkReportPath/overflow measures the table.
type pending struct {
	// epoch: bit 0 is set once the actor has closed the table (final
	// drain); epoch>>1 counts flips, and its low bit names the current
	// generation. Only the actor writes it.
	epoch atomic.Uint64
	// refused counts reports the table refused (closed, rule conflict,
	// unknown rule); lost counts coalesced latency events the actor could
	// not place (hi-lo ≥ window).
	refused atomic.Uint64
	lost    atomic.Uint64
	_       [128 - 24]byte
	gen     [2]pendingGen
	// rules are the distinct latency rules of the configuration; a slot's
	// rule is an index into it plus one. Read-only after New.
	rules []latencyRule
}

type latencyRule struct {
	minTriggers int32
	window      time.Duration
	block       time.Duration
}

type pendingGen struct {
	// inflight[h&mask] counts the reporters with stripe hint h inside this
	// generation right now: one counter per stripe, for the reason the
	// stripes are per P, so that two cores coalescing at once do not
	// bounce one line between them.
	inflight []paddedCount
	mask     uint32
	dirty    atomic.Bool // some slot was written since the actor last read it
	_        [128 - 32]byte
	slots    []pendingSlot // indexed by identifier
}

type paddedCount struct {
	n atomic.Int64
	_ [128 - 8]byte
}

// pendingSlot is what one identifier has pending in one generation.
type pendingSlot struct {
	retryAfter atomic.Int64 // latest Retry-After deadline; 0 = none
	rule       atomic.Int32 // latency rule number; 0 = no latency event
	count      atomic.Int32 // latency events; saturates at math.MaxInt32
	lo, hi     atomic.Int64 // earliest and latest event time; lo is MaxInt64 when count is 0
	// Passive health: how many failures and successes, and the latest of
	// each. Their order within one drain period is lost; the actor applies
	// the later kind last, which is what the streak and the breaker state
	// depend on.
	fails, succs   atomic.Int32
	failAt, succAt atomic.Int64
}

// newPending returns a table for numIDs identifiers and the given rules,
// with one in-flight counter per stripe (stripes must be a power of two).
func newPending(numIDs, stripes int, rules []latencyRule) *pending {
	p := &pending{rules: rules}
	for g := range p.gen {
		p.gen[g].inflight = make([]paddedCount, stripes)
		p.gen[g].mask = uint32(stripes - 1)
		p.gen[g].slots = make([]pendingSlot, numIDs)
		for i := range p.gen[g].slots {
			p.gen[g].slots[i].lo.Store(math.MaxInt64)
		}
	}
	return p
}

// enter announces a reporter with stripe hint h in the current generation
// and returns the generation and the reporter's counter in it, or nil once
// the table is closed. The caller must call c.Add(-1) (or g.leave(c)) when
// done.
func (p *pending) enter(h uint32) (*pendingGen, *atomic.Int64) {
	for {
		e := p.epoch.Load()
		if e&1 != 0 {
			return nil, nil
		}
		g := &p.gen[(e>>1)&1]
		c := &g.inflight[h&g.mask].n
		c.Add(1)
		if p.epoch.Load() == e {
			return g, c
		}
		// The actor flipped in between: it may already be reading g.
		c.Add(-1)
	}
}

// leave marks g dirty and leaves it.
func (g *pendingGen) leave(c *atomic.Int64) {
	if !g.dirty.Load() {
		g.dirty.Store(true)
	}
	c.Add(-1)
}

// retryAfter coalesces a Retry-After deadline into id's slot. It reports
// false, counting the report in refused, only when the table is closed.
func (p *pending) retryAfter(h uint32, id int, until int64) bool {
	g, c := p.enter(h)
	if g == nil {
		p.refused.Add(1)
		return false
	}
	casMax(&g.slots[id].retryAfter, until)
	g.leave(c)
	return true
}

// latency coalesces a latency event into id's slot. It reports false,
// counting the event in refused, when the table is closed, the rule is not a
// configured one, or id's slot holds events of another rule.
func (p *pending) latency(h uint32, id int, at int64, minTriggers int32, window, block time.Duration) bool {
	rule := p.ruleOf(minTriggers, window, block)
	if rule == 0 {
		p.refused.Add(1)
		return false
	}
	g, c := p.enter(h)
	if g == nil {
		p.refused.Add(1)
		return false
	}
	s := &g.slots[id]
	if r := s.rule.Load(); r != rule && (r != 0 || !s.rule.CompareAndSwap(0, rule)) && s.rule.Load() != rule {
		c.Add(-1)
		p.refused.Add(1)
		return false
	}
	if s.count.Add(1) < 0 {
		s.count.Store(math.MaxInt32) // 2³¹ events in one drain period: more cannot matter
	}
	casMin(&s.lo, at)
	casMax(&s.hi, at)
	g.leave(c)
	return true
}

// outcome coalesces a passive-health success or failure of id. It reports
// false, counting the report in refused, only when the table is closed.
func (p *pending) outcome(h uint32, id int, at int64, failure bool) bool {
	g, c := p.enter(h)
	if g == nil {
		p.refused.Add(1)
		return false
	}
	s := &g.slots[id]
	n, t := &s.succs, &s.succAt
	if failure {
		n, t = &s.fails, &s.failAt
	}
	if n.Add(1) < 0 {
		n.Store(math.MaxInt32)
	}
	casMax(t, at)
	g.leave(c)
	return true
}

// ruleOf returns the number of a configured latency rule, 0 when the
// triple is not one. The configuration has a handful of rules, so a linear
// scan is the fastest lookup; it runs only on the overflow path.
func (p *pending) ruleOf(minTriggers int32, window, block time.Duration) int32 {
	for i, r := range p.rules {
		if r.minTriggers == minTriggers && r.window == window && r.block == block {
			return int32(i + 1)
		}
	}
	return 0
}

// dirty reports whether the current generation may hold reports. Actor
// only.
func (p *pending) dirty() bool { return p.gen[(p.epoch.Load()>>1)&1].dirty.Load() }

// flip makes the other generation current (and, with close, closes the
// table), waits until no reporter is left in the old one, and returns it
// for the actor to read and clear. Actor only.
func (p *pending) flip(close bool) *pendingGen {
	e := p.epoch.Load()
	old := &p.gen[(e>>1)&1]
	next := e + 2
	if close {
		next |= 1
	}
	p.epoch.Store(next)
	for i := range old.inflight {
		for old.inflight[i].n.Load() != 0 {
			// A reporter is between its two atomics, or was preempted
			// there.
			runtime.Gosched()
		}
	}
	return old
}

func casMax(v *atomic.Int64, x int64) {
	for {
		cur := v.Load()
		if x <= cur || v.CompareAndSwap(cur, x) {
			return
		}
	}
}

func casMin(v *atomic.Int64, x int64) {
	for {
		cur := v.Load()
		if x >= cur || v.CompareAndSwap(cur, x) {
			return
		}
	}
}
