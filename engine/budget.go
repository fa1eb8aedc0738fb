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
type shard struct {
	inflight atomic.Int64 // Do calls in progress, for Close
	requests atomic.Int64 // requests started, for the retry budget
	_        [48]byte     // pad to a cache line
}

const numShards = 16

func (e *Engine) pickShard() *shard {
	return &e.shards[rand.Uint32()&(numShards-1)]
}

func (e *Engine) totalRequests() int64 {
	var n int64
	for i := range e.shards {
		n += e.shards[i].requests.Load()
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
