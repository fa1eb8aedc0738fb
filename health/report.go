package health

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// report is one fire-and-forget message to the actor. minTriggers doubles
// as the kind (0 = retry-after, ≥ 1 = latency event) so that a report is 32
// bytes, two to a cache line.
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
	mu      sync.Mutex
	closed  bool     // set by the actor's final drain; reports are refused from then on
	buf     []report // len ≤ cap: cap is the stripe's share of the buffer
	dropped atomic.Uint64
	// Stripes sit side by side in one array; keep each on its own pair of
	// cache lines (the adjacent-line prefetcher pulls lines in pairs) so
	// that reporters on different cores do not invalidate each other.
	_ [128 - 8 - 8 - 24 - 8]byte
}

// stripes is the report path: a small array of mutex-guarded buffers and a
// one-slot doorbell channel that wakes the actor once per batch.
//
// Why not one buffered channel? A non-blocking channel send is ~16 ns
// alone, but every sender on every core takes the same channel lock, so
// with two cores reporting it gets slower, not faster (PERF-NOTES). Here a
// reporter appends to the stripe of the core it runs on (see token), so
// two cores rarely meet on one lock or one cache line, and it touches the
// shared doorbell only when its stripe was empty, which under load is once
// per batch rather than once per report.
type stripes struct {
	s        []stripe
	mask     uint32
	doorbell chan struct{} // capacity 1; a token means "some stripe may be non-empty"
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

// put offers r without ever waiting: a stripe whose lock is taken is
// skipped (TryLock) rather than waited for, a full stripe drops. It reports
// whether r was accepted; an accepted report is applied by the actor at the
// latest during Stop.
func (st *stripes) put(r report) bool {
	tok, _ := tokens.Get().(*token)
	if tok == nil {
		tok = &token{idx: nextToken.Add(1) - 1}
	}
	h := tok.idx
	tokens.Put(tok)
	return st.putAt(h, r)
}

// putAt is put starting at stripe h (modulo the number of stripes).
func (st *stripes) putAt(h uint32, r report) bool {
	// Two rounds: TryLock also fails, spuriously, when the lock word is
	// merely being updated by someone else.
	for i := uint32(0); i < 2*(st.mask+1); i++ {
		s := &st.s[(h+i)&st.mask]
		if !s.mu.TryLock() {
			continue
		}
		n := len(s.buf)
		if n == cap(s.buf) || s.closed {
			s.mu.Unlock()
			s.dropped.Add(1)
			return false
		}
		s.buf = s.buf[:n+1]
		s.buf[n] = r
		s.mu.Unlock()
		if n == 0 {
			// The stripe was empty, so the actor may be asleep with nothing
			// to wake it. If a token is already waiting this costs a load.
			select {
			case st.doorbell <- struct{}{}:
			default:
			}
		}
		return true
	}
	// Every stripe was being appended to or swapped at this very moment.
	st.s[h&st.mask].dropped.Add(1)
	return false
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

func (st *stripes) dropped() uint64 {
	var n uint64
	for i := range st.s {
		n += st.s[i].dropped.Load()
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
