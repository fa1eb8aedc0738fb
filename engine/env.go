package engine

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

// env is everything a Machine reads or changes outside its own request:
// the compiled configuration, the shared health state, and the engine-wide
// effects of a decision. A Machine's decisions depend only on its own
// state, its time and what it reads here; its effects on the rest of the
// process all go through these fields, and are exactly these:
//
//   - health: Retry-After blocks and latency events it reports (never
//     waited on), and the view it reads once per decision;
//   - shard: the per-target attempt, success and failure counts, and the
//     count of requests begun and ended;
//   - retrying: the max_retrying_requests slot it may hold;
//   - budget: the retry budget a retry draws from;
//   - rnd: the random pick and backoff jitter;
//   - hooks and log: what it tells the host.
//
// The Engine owns one env and shares it with every Machine; a test builds
// one directly (see newEnv) to drive a Machine without an Engine.
type env struct {
	c      *policy.Compiled
	health Health
	actor  *health.Actor // the engine's own health actor, nil under WithHealth; read directly on the request path
	rnd    rand.Source
	log    *zap.Logger
	debug  bool // log.Core().Enabled(Debug), cached: the request path checks a bool
	hooks  Hooks

	maxRetrying int64
	retrying    *atomic.Int64 // on a cache line of its own, in the Engine
	budget      *retryBudget
	now         func() int64 // the clock, for machines in real time
	shards      []shard      // for the retry budget's request count

	// Passive health, per target: the identifier its outcomes count for
	// (-1: passive health off), and how long a probe claim on it lasts.
	ejID     []int32
	claimFor []time.Duration

	// Hedging (hedge.go): per primary target, its policy's hedge budget
	// (nil when no policy hedges, or under WithoutHedging; an entry nil
	// when its policy does not hedge); and where percentiles of time to
	// first token come from (nil when no policy hedges by one, or under
	// WithHealth).
	hedges []*hedgeBudget
	ttfb   ttfbSource
}

// passiveHealth fills ejID and claimFor from c. A probe's claim lasts the
// rule's max_cooldown: long enough that a probe which hangs does not let a
// second one through at once, short enough that one which never reports
// does not keep the target half-open for good.
func (v *env) passiveHealth(c *policy.Compiled) {
	v.ejID = make([]int32, c.NumTargets())
	v.claimFor = make([]time.Duration, c.NumTargets())
	for t := range v.ejID {
		v.ejID[t] = -1
		if t < len(c.Ejection) && c.Ejection[t] != nil {
			r := c.Ejection[t]
			v.ejID[t] = int32(c.ID(t, r.Scope))
			v.claimFor[t] = max(r.MaxCooldown, r.Cooldown)
		}
	}
}

// requests is the number of requests begun so far: what the retry budget
// compares retries with.
func (v *env) requests() int64 {
	var n int64
	for i := range v.shards {
		n += v.shards[i].begun.Load()
	}
	return n
}
