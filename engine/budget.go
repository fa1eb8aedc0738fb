package engine

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reroute-go/reroute/policy"
)

// shard is one stripe of the engine's request accounting. A request picks
// a shard at random and touches only that cache line, so requests on
// different cores do not bounce a shared counter between them (about 41 ns
// a bounce on this machine class, more than half the success path).
//
// The hot fields of two shards are never on one cache line: a shard is two
// lines long, and each shard's counts live in their own allocation with a
// line of padding either side.
type shard struct {
	inflight atomic.Int64   // Do calls in progress, for Close
	counts   []atomic.Int64 // per target: attempts, successes, failures, retries
	_        [128 - 32]byte
}

const (
	countAttempts = iota
	countSuccesses
	countFailures
	countRetries
	countKinds
)

const countPad = 8 // int64s: one cache line

func newCounts(targets int) []atomic.Int64 {
	n := countKinds * targets
	return make([]atomic.Int64, n+2*countPad)[countPad : countPad+n]
}

func (s *shard) count(t, kind int) { s.add(t, kind, 1) }

func (s *shard) add(t, kind int, d int64) {
	s.counts[t*countKinds+kind].Add(d)
}

// Counts are the attempts, successes and failures of one target since New.
type Counts struct {
	Attempts, Successes, Failures int64
}

// Counts returns target's counts, summed over the engine's shards: exact
// once the requests it should see have returned. Safe for concurrent use.
func (e *Engine) Counts(target string) Counts {
	var c Counts
	t, ok := e.c.Lookup(target)
	if !ok {
		return c
	}
	for i := range e.shards {
		s := &e.shards[i]
		c.Attempts += s.counts[t*countKinds+countAttempts].Load()
		c.Successes += s.counts[t*countKinds+countSuccesses].Load()
		c.Failures += s.counts[t*countKinds+countFailures].Load()
	}
	return c
}

const numShards = 16

func (e *Engine) pickShard() *shard {
	return &e.shards[rand.Uint32()&(numShards-1)]
}

// totalRequests is the number of requests that have made or decided a
// first attempt: every attempt that was not a retry. The success path
// counts attempts anyway, so this costs it nothing more.
func (e *Engine) totalRequests() int64 {
	var n int64
	for i := range e.shards {
		s := &e.shards[i]
		for t := 0; t < len(s.counts); t += countKinds {
			n += s.counts[t+countAttempts].Load() - s.counts[t+countRetries].Load()
		}
	}
	return n
}

// retryBudget is SPEC §15's budget, in the manner of Envoy's and Finagle's:
// retries within the window may be at most percent of the requests within
// it plus minPerSecond × window. It is consulted only on the retry path;
// the success path only counts requests in its shard.
//
// The window slides in one-second buckets. A bucket remembers the request
// total when it was first touched and the retries granted during its
// second; requests within the window are the total now minus the total
// remembered by the oldest bucket still inside it. A bucket is touched only
// by retries, so after a quiet spell the first second counts the requests
// since that retry: an under-count the floor absorbs.
type retryBudget struct {
	enabled bool
	percent float64
	floor   float64 // minPerSecond × window seconds
	seconds int64

	mu      sync.Mutex
	buckets []budgetBucket
}

type budgetBucket struct {
	sec     int64
	base    int64
	retries int64
}

func newRetryBudget(b *policy.RetryBudget) *retryBudget {
	if b == nil || !*b.Enabled {
		return &retryBudget{}
	}
	secs := int64(b.Window.D() / time.Second)
	if secs < 1 {
		secs = 1
	}
	return &retryBudget{
		enabled: true,
		percent: *b.Percent / 100,
		floor:   *b.MinPerSecond * float64(secs),
		seconds: secs,
		buckets: make([]budgetBucket, secs),
	}
}

// allow grants one retry at now (unix nanoseconds) given the total number
// of requests started so far, or refuses it.
func (b *retryBudget) allow(now, total int64) bool {
	if !b.enabled {
		return true
	}
	sec := now / int64(time.Second)
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := &b.buckets[sec%b.seconds]
	if cur.sec != sec {
		*cur = budgetBucket{sec: sec, base: total}
	}
	oldest := total
	var retries int64
	for i := range b.buckets {
		bk := &b.buckets[i]
		if bk.sec > sec-b.seconds && bk.sec <= sec {
			retries += bk.retries
			oldest = min(oldest, bk.base)
		}
	}
	if float64(retries+1) > b.percent*float64(total-oldest)+b.floor {
		return false
	}
	cur.retries++
	return true
}
