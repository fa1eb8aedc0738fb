package engine

import (
	"math/rand/v2"
	"sync/atomic"
)

// shard is one stripe of the engine's request accounting. A request picks
// a shard at random and touches only that cache line, so requests on
// different cores do not bounce a shared counter between them (about 41 ns
// a bounce on this machine class, more than half the success path).
//
// The hot fields of two shards are never on one cache line: a shard is two
// lines long, and each shard's counts live in their own allocation with a
// line of padding either side.
//
// begun and ended count requests: begun is what the retry budget compares
// retries with, and begun-ended is the number in flight, which Close waits
// for. Two counters that only grow cost the success path the same two
// atomic adds as one in-flight gauge did, and give the request count for
// free.
type shard struct {
	begun atomic.Int64
	ended atomic.Int64
	// resumed counts the continuations begun (Engine.Continue): they end
	// in ended like requests, but are not requests for the retry budget.
	resumed atomic.Int64
	counts  []atomic.Int64 // per target: successes, failures
	_       [128 - 48]byte
}

// An attempt is counted once, when it ends, as a success (its answer was
// delivered) or a failure; the attempts of a target are the sum of the
// two, so no request pays an atomic add for the attempt itself.
const (
	countSuccesses = iota
	countFailures
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
// Every attempt made ends as one of the two: a success when its answer was
// delivered, a failure otherwise; an answer that failed after it was
// committed (a stream cut mid-way) counts as a failure, not as a success.
// Attempts is their sum, so an attempt still running is not counted yet.
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
		c.Successes += s.counts[t*countKinds+countSuccesses].Load()
		c.Failures += s.counts[t*countKinds+countFailures].Load()
	}
	c.Attempts = c.Successes + c.Failures
	return c
}

const numShards = 16

func (e *Engine) pickShard() *shard {
	return &e.shards[rand.Uint32()&(numShards-1)]
}

// inflight is the number of Do and Continue calls in progress. ended is read before
// begun, so a request counted as ended is always counted as begun: the
// result is never below the true number in flight when ended was read.
func (e *Engine) inflight() int64 {
	var ended, begun int64
	for i := range e.shards {
		ended += e.shards[i].ended.Load()
	}
	for i := range e.shards {
		begun += e.shards[i].begun.Load() + e.shards[i].resumed.Load()
	}
	return begun - ended
}
