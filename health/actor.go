package health

import (
	"context"
	"math"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/benbjohnson/clock"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/reroute-go/reroute/internal/actor"
	"github.com/reroute-go/reroute/policy"
)

// Actor owns one [State] in one goroutine and publishes immutable
// [Snapshot]s of it. Request goroutines read the current snapshot without
// waiting and send reports without waiting; only the actor's goroutine ever
// touches the State.
//
// All methods are safe for concurrent use. After [Actor.Stop]: reports are
// refused and counted in Dropped, Snapshot keeps answering from the last
// snapshot published (which includes every report accepted before Stop),
// Blocks and Sync return [ErrStopped].
//
// Only outcomes that can change the state should be reported: a
// Retry-After, a latency event. The engine guarantees this, so that a
// healthy success sends nothing and costs nothing here.
//
// An Actor must be made with [New]; the zero value is not usable.
type Actor struct {
	// The fields are grouped by who writes them, with padding between the
	// groups, so that a publish or the loop's bookkeeping does not evict
	// the cache line every reporter reads.

	// Written by the loop on each publish, read by every request.
	snap atomic.Pointer[Snapshot]
	_    [120]byte

	// Read-only after New, read by reporters.
	reports stripes
	numIDs  int
	queryc  chan actor.Request[query, []Block]
	life    actor.Lifecycle
	invalid atomic.Uint64 // reports naming an identifier out of range; rare
	_       [128]byte

	// Owned by the loop goroutine.
	state    *State
	spare    [][]report // one empty buffer per stripe, swapped in by take
	changes  []change   // transitions of the batch being applied, for logging
	clock    clock.Clock
	log      *zap.Logger
	interval time.Duration
	rest     time.Duration
	// published counts snapshots published after New; read by tests once
	// the loop has stopped.
	published uint64
}

type query uint8

const (
	querySync query = iota
	queryBlocks
)

// change is a block created or extended while applying a batch.
type change struct {
	id    int
	kind  Kind
	prev  int64
	until int64
}

// New makes the health actor for the identifiers of c and starts its
// goroutine. Call Stop to end it. c must not be nil and must not change
// afterwards.
func New(c *policy.Compiled, opts ...Option) *Actor {
	a := newActor(c, opts...)
	// A fresh Lifecycle cannot refuse to start.
	_ = a.life.Start(a.loop)
	return a
}

// newActor makes an Actor without starting its goroutine; benchmarks drive
// its loop functions directly.
func newActor(c *policy.Compiled, opts ...Option) *Actor {
	o := defaults()
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	n := o.stripes
	if n <= 0 {
		// Twice the cores, so that the per-P tokens of two cores (handed out
		// in sequence, but re-made after garbage collections) rarely land
		// on the same stripe.
		n = 2 * runtime.GOMAXPROCS(0)
	}
	a := &Actor{
		reports:  newStripes(n, o.buffer),
		numIDs:   c.NumIDs(),
		queryc:   make(chan actor.Request[query, []Block]),
		state:    NewState(c),
		clock:    o.clock,
		log:      o.log,
		interval: o.interval,
		rest:     o.rest,
	}
	a.spare = make([][]report, len(a.reports.s))
	for i := range a.spare {
		a.spare[i] = make([]report, 0, cap(a.reports.s[i].buf))
	}
	a.snap.Store(a.state.Snapshot())
	return a
}

// Snapshot returns the current snapshot: one atomic load, never nil, never
// waits. After Stop it is the last one published.
func (a *Actor) Snapshot() *Snapshot { return a.snap.Load() }

// ReportRetryAfter asks the actor to block identifier id until the given
// unix nanosecond (max-expiration). It never blocks: it reports false, and
// counts the report in Dropped, when the buffer is full, the actor has
// stopped or id is out of range. true means the report will be applied, at
// the latest when Stop returns.
func (a *Actor) ReportRetryAfter(id int, until int64) bool {
	if uint(id) >= uint(a.numIDs) {
		a.invalid.Add(1)
		return false
	}
	return a.reports.put(report{at: until, id: int32(id)})
}

// ReportLatency tells the actor that identifier id had a latency event at
// the given unix nanosecond, with the trigger rule of the policy that saw
// it (see [State.LatencyEvent]). Like ReportRetryAfter it never blocks, and
// reports false (counted in Dropped) when it had to drop the event.
func (a *Actor) ReportLatency(id int, at int64, minTriggers int, window, block time.Duration) bool {
	if uint(id) >= uint(a.numIDs) {
		a.invalid.Add(1)
		return false
	}
	m := int32(min(max(minTriggers, 1), math.MaxInt32))
	return a.reports.put(report{at: at, window: window, block: block, id: int32(id), minTriggers: m})
}

// Blocks asks the actor for the blocks live now by its clock, after it has
// applied every report accepted so far. It returns ctx.Err() if ctx ends
// first and [ErrStopped] after Stop. The slice is the caller's.
func (a *Actor) Blocks(ctx context.Context) ([]Block, error) {
	return actor.Ask(ctx, a.queryc, a.life.Done(), queryBlocks)
}

// Sync is a barrier: when it returns nil, every report this goroutine made
// before calling it (and every other report accepted before the actor
// received the call) has been applied, blocks that have ended by the
// actor's clock have been dropped, and the resulting snapshot is published.
// It returns ctx.Err() if ctx ends first and [ErrStopped] after Stop.
// It costs a round trip to the actor; it is meant for tests, the simulator
// and shutdown paths, not for requests.
func (a *Actor) Sync(ctx context.Context) error {
	_, err := actor.Ask(ctx, a.queryc, a.life.Done(), querySync)
	return err
}

// Dropped returns how many reports were refused so far: buffer full, actor
// stopped, or identifier out of range. It only grows.
func (a *Actor) Dropped() uint64 { return a.reports.dropped() + a.invalid.Load() }

// Stop ends the actor: it refuses new reports, applies and publishes every
// report accepted before, and waits for the goroutine to return. It is
// idempotent and may be called from many goroutines at once.
func (a *Actor) Stop() { a.life.Stop() }

// loop is the actor's goroutine. What flows where:
//
//   - stop (Lifecycle.Stopping): closed by Stop; the loop drains one last
//     time, closing the stripes, and returns.
//   - bell (the stripes' doorbell, one slot): "a stripe went from empty to
//     non-empty"; the loop drains every stripe.
//   - restc: after a drain the loop rests, leaving the doorbell unanswered
//     (bell = nil) until this timer fires. A report after a quiet period is
//     drained at once; a stream of reports is drained in batches at most
//     once per rest, and only the first report of each rest pays for waking
//     the actor. The rest is a performance device, not a semantic one, so
//     it uses the runtime's timers rather than the injected clock: a mock
//     clock must not freeze the report path.
//   - tick (the injected clock's Ticker): drop ended blocks.
//   - queryc (actor.Ask requests): Sync and Blocks. Both drain and expire
//     first, since select picks at random among ready cases.
func (a *Actor) loop(stop <-chan struct{}) {
	tick := a.clock.Ticker(a.interval)
	defer tick.Stop()
	rest := time.NewTimer(time.Hour)
	rest.Stop()
	defer rest.Stop()
	bell := a.reports.doorbell
	var restc <-chan time.Time
	for {
		select {
		case <-stop:
			a.drain(true)
			return
		case <-bell:
			if a.drain(false) > 0 && a.rest > 0 {
				bell, restc = nil, rest.C
				rest.Reset(a.rest)
			}
		case <-restc:
			bell, restc = a.reports.doorbell, nil
		case <-tick.C:
			a.expire()
		case req := <-a.queryc:
			a.drain(false)
			now := a.expire()
			var out []Block
			if req.Q == queryBlocks {
				out = a.state.Blocks(now)
			}
			req.Respond(out)
		}
	}
}

// drain takes every stripe's batch, applies it, publishes one snapshot if
// any deadline changed, logs the transitions, and returns how many reports
// it applied. final closes the stripes for good.
func (a *Actor) drain(final bool) (n int) {
	// Looked up once per drain, not cached at New: the host may change the
	// level of its logger at run time.
	core := a.log.Core()
	track := core.Enabled(zapcore.InfoLevel) || core.Enabled(zapcore.DebugLevel)
	changed := false
	for i := range a.reports.s {
		batch := a.reports.take(i, a.spare[i], final)
		if batch == nil {
			continue
		}
		changed = a.apply(batch, track) || changed
		n += len(batch)
		a.spare[i] = batch[:0]
	}
	if changed {
		a.publish()
		a.logChanges()
	}
	return n
}

// publish stores a new snapshot of the state for readers.
func (a *Actor) publish() {
	a.snap.Store(a.state.Snapshot())
	a.published++
}

// apply applies a batch of reports to the state and reports whether a
// deadline changed; with track it records each change for logChanges.
func (a *Actor) apply(batch []report, track bool) (changed bool) {
	s := a.state
	for i := range batch {
		r := &batch[i]
		id := int(r.id)
		k := RetryAfter
		if r.minTriggers > 0 {
			k = Latency
		}
		prev := s.deadline(k, id)
		var c bool
		if k == RetryAfter {
			c = s.BlockRetryAfter(id, r.at)
		} else {
			_, _, c = s.latencyEvent(id, r.at, int(r.minTriggers), r.window, r.block)
		}
		if c {
			changed = true
			if track {
				a.changes = append(a.changes, change{id: id, kind: k, prev: prev, until: s.deadline(k, id)})
			}
		}
	}
	return changed
}

// logChanges logs the transitions collected by apply. Nothing here runs on
// a request goroutine; with a disabled level it costs a Check per change.
func (a *Actor) logChanges() {
	if len(a.changes) == 0 {
		return
	}
	now := a.clock.Now().UnixNano()
	for _, c := range a.changes {
		lvl, msg := zapcore.InfoLevel, "block created"
		if c.prev > now {
			lvl, msg = zapcore.DebugLevel, "block extended"
		}
		if ce := a.log.Check(lvl, msg); ce != nil {
			ce.Write(
				zap.String("id", a.state.names[c.id]),
				zap.Stringer("kind", c.kind),
				zap.Time("until", time.Unix(0, c.until)),
				zap.Duration("duration", time.Duration(c.until-now)),
			)
		}
	}
	a.changes = a.changes[:0]
}

// expire drops ended blocks as of the actor's clock, logs them and, if
// there were any, publishes a cleaned snapshot so that Clear is true again.
// It returns the time it used.
func (a *Actor) expire() int64 {
	now := a.clock.Now().UnixNano()
	ex := a.state.Expire(now)
	if len(ex) == 0 {
		return now
	}
	a.publish()
	for _, b := range ex {
		if ce := a.log.Check(zapcore.InfoLevel, "block expired"); ce != nil {
			ce.Write(
				zap.String("id", b.Name),
				zap.Stringer("kind", b.Kind),
				zap.Time("until", time.Unix(0, b.Until)),
			)
		}
	}
	return now
}
