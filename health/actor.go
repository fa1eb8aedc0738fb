package health

import (
	"cmp"
	"context"
	"math"
	"runtime"
	"slices"
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
	pend    *pending // where reports go when their stripe is full
	numIDs  int
	queryc  chan actor.Request[query, []Block]
	importc chan imported // facts of other replicas (Import)
	life    actor.Lifecycle
	invalid atomic.Uint64 // reports naming an identifier out of range; rare
	ttfb    *ttfbFeed     // times to first token (ttfb.go); nil when no hedge needs them
	// c and providerIDs resolve the names of imported facts.
	c           *policy.Compiled
	providerIDs map[string]int
	// probes[id] is the claim on probing half-open identifier id, shared
	// by every snapshot: see Snapshot.Claim. The actor writes it when id
	// is ejected again (the new ejection's end, so that a claimer reading
	// an older snapshot cannot claim) or recovers (0).
	probes []atomic.Int64
	// attention[id] is nonzero while a success of id must be reported:
	// its failure reports not applied yet, plus attentionBit while the
	// State has a streak or an ejection for id. The request path reads
	// this one word instead of the snapshot, which shows a streak only
	// once the actor has applied the failure and published. Reporters add
	// their failures; only the actor takes them off, after publishing, and
	// it sets the bit before it takes off the failure that began the
	// streak, so the word is never 0 while a success matters.
	attention []atomic.Int32
	suspect   []bool // actor-owned: whether attentionBit is set for id
	_         [128]byte

	// Owned by the loop goroutine.
	state   *State
	spare   [][]report // one empty buffer per stripe, swapped in by take
	changes []change   // transitions of the batch being applied, for logging and onBlock
	// settled are the failure reports of the batch being applied, taken
	// off attention only after the batch is applied and published.
	settled []settle
	// outcomes gathers a drain's passive-health reports to apply them in
	// time order; reused.
	outcomes  []report
	clock     clock.Clock
	log       *zap.Logger
	onBlock   func(name string, kind Kind, d time.Duration)
	onEject   func(name string, d time.Duration, n int)
	onRecover func(name string)
	interval  time.Duration
	rest      time.Duration
	// since[k][id] is when the live block of kind k on id was created, by
	// the actor's clock, so that its expiry can say how long it lasted; 0
	// when not known (created while nothing was tracking changes).
	since [numKinds][]int64
	// The rate limit of the "reports dropped" warning.
	warnedDropped uint64 // Dropped() when it was last logged
	warnedAt      int64  // when it was last logged (actor's clock); 0 = never
	// published counts snapshots published after New; read by tests once
	// the loop has stopped.
	published uint64
	// factc receives the facts created from local reports (WithFactSink);
	// factDrops counts those it had no room for.
	factc     chan<- Fact
	factDrops atomic.Uint64
}

type settle struct {
	id int32
	n  int32
}

type query uint8

const (
	querySync query = iota
	queryBlocks
)

// change is a block created or extended while applying a batch, or a
// passive-health transition (kind Ejected: an ejection, n its number; or,
// with recovered, a recovery).
type change struct {
	id        int
	kind      Kind
	prev      int64
	until     int64
	n         int
	recovered bool
	imported  bool // applied from another replica's fact: not exported again
	// strike and clear are a failure that counted toward a streak and a
	// success that ended one (until: their time), recorded only for the
	// fact sink: nothing is logged of them.
	strike, clear bool
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
		reports:   newStripes(n, o.buffer),
		pend:      newPending(c.NumIDs(), nextPow2(n), latencyRules(c)),
		numIDs:    c.NumIDs(),
		queryc:    make(chan actor.Request[query, []Block]),
		importc:   make(chan imported, importBuffer),
		c:         c,
		factc:     o.facts,
		state:     NewState(c),
		clock:     o.clock,
		log:       o.log,
		onBlock:   o.onBlock,
		onEject:   o.onEject,
		onRecover: o.onRecover,
		probes:    make([]atomic.Int64, c.NumIDs()),
		attention: make([]atomic.Int32, c.NumIDs()),
		suspect:   make([]bool, c.NumIDs()),
		interval:  o.interval,
		rest:      o.rest,
		ttfb:      newTTFBFeed(c, o.buffer),
	}
	a.spare = make([][]report, len(a.reports.s))
	for i := range a.spare {
		a.spare[i] = make([]report, 0, cap(a.reports.s[i].buf))
	}
	for k := range a.since {
		a.since[k] = make([]int64, c.NumIDs())
	}
	a.providerIDs = make(map[string]int, len(c.Providers))
	for j, p := range c.Providers {
		a.providerIDs[p] = c.NumTargets() + j
	}
	a.publish()
	a.published = 0
	return a
}

// latencyRules returns the distinct latency rules of c, in the order of
// the targets: the rules a pending slot can hold.
func latencyRules(c *policy.Compiled) []latencyRule {
	var out []latencyRule
	for _, r := range c.Rules {
		if r == nil || r.Latency == nil {
			continue
		}
		l := latencyRule{
			minTriggers: int32(min(max(r.Latency.MinTriggers, 1), math.MaxInt32)),
			window:      r.Latency.Window,
			block:       r.Latency.Block,
		}
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}

// Snapshot returns the current snapshot: one atomic load, never nil, never
// waits. After Stop it is the last one published.
func (a *Actor) Snapshot() *Snapshot { return a.snap.Load() }

// ReportRetryAfter asks the actor to block identifier id until the given
// unix nanosecond (max-expiration). It never blocks and never allocates.
// When the report buffer is full the deadline is coalesced into id's slot
// of a pending table instead (see Coalesced), so a Retry-After is never
// lost to a burst: it reports false, and counts the report in Dropped, only
// when the actor has stopped or id is out of range. true means the report
// will be applied, at the latest when Stop returns.
func (a *Actor) ReportRetryAfter(id int, until int64) bool {
	if uint(id) >= uint(a.numIDs) {
		a.invalid.Add(1)
		return false
	}
	h := hint()
	switch a.reports.putAt(h, report{at: until, id: int32(id)}) {
	case putOK:
		return true
	case putFull:
		if a.pend.retryAfter(h, id, until) {
			a.reports.ring()
			return true
		}
	}
	return false
}

// ReportLatency tells the actor that identifier id had a latency event at
// the given unix nanosecond, with the trigger rule of the policy that saw
// it (see [State.LatencyEvent]). Like ReportRetryAfter it never blocks and
// never allocates, and a full buffer coalesces the event into id's pending
// slot (a count and the earliest and latest time, per rule). It reports
// false (counted in Dropped) when the actor has stopped, id is out of
// range, or the buffer is full and the event cannot be coalesced: its rule
// is not one of the configuration's, or id's slot already holds events of
// another rule since the actor last drained it.
func (a *Actor) ReportLatency(id int, at int64, minTriggers int, window, block time.Duration) bool {
	if uint(id) >= uint(a.numIDs) {
		a.invalid.Add(1)
		return false
	}
	m := int32(min(max(minTriggers, 1), math.MaxInt32))
	h := hint()
	switch a.reports.putAt(h, report{at: at, window: window, block: block, id: int32(id), minTriggers: m}) {
	case putOK:
		return true
	case putFull:
		if a.pend.latency(h, id, at, m, window, block) {
			a.reports.ring()
			return true
		}
	}
	return false
}

// ReportFailure tells the actor that identifier id (see
// State.EjectionID) had a failure that counts for passive health at the
// given unix nanosecond. ReportSuccess tells it of an answer that shows id
// works; the engine sends it only when the snapshot says id is suspect
// (Status.Suspect), so a healthy success sends nothing. Both never block
// and never allocate; a full buffer coalesces them into id's pending slot.
// They report false (counted in Dropped) only when the actor has stopped
// or id is out of range.
func (a *Actor) ReportFailure(id int, at int64) bool { return a.outcome(id, at, true) }

// ReportSuccess: see ReportFailure.
func (a *Actor) ReportSuccess(id int, at int64) bool { return a.outcome(id, at, false) }

func (a *Actor) outcome(id int, at int64, failure bool) bool {
	if uint(id) >= uint(a.numIDs) {
		a.invalid.Add(1)
		return false
	}
	kind := kindSuccess
	if failure {
		kind = kindFailure
		a.attention[id].Add(1)
	}
	h := hint()
	switch a.reports.putAt(h, report{at: at, id: int32(id), minTriggers: kind}) {
	case putOK:
		return true
	case putFull:
		if a.pend.outcome(h, id, at, failure) {
			a.reports.ring()
			return true
		}
	}
	if failure {
		a.attention[id].Add(-1)
	}
	return false
}

// Blocks asks the actor for the blocks live now by its clock, after it has
// applied every report accepted so far. It returns ctx.Err() if ctx ends
// first and [ErrStopped] after Stop. The slice is the caller's.
func (a *Actor) Blocks(ctx context.Context) ([]Block, error) {
	return actor.Ask(ctx, a.queryc, a.life.Done(), queryBlocks)
}

// Sync is a barrier: when it returns nil, every report this goroutine made
// before calling it (and every other report, and every Import, accepted
// before the actor received the call) has been applied, blocks that have ended by the
// actor's clock have been dropped, and the resulting snapshot is published.
// It returns ctx.Err() if ctx ends first and [ErrStopped] after Stop.
// It costs a round trip to the actor; it is meant for tests, the simulator
// and shutdown paths, not for requests.
func (a *Actor) Sync(ctx context.Context) error {
	_, err := actor.Ask(ctx, a.queryc, a.life.Done(), querySync)
	return err
}

// Dropped returns how many reports were refused or lost so far: actor
// stopped, identifier out of range, a latency event that found the buffer
// full and could not be coalesced (see ReportLatency), and coalesced
// latency events the actor could not place in time (see the pending table
// in report.go). It only grows; the actor also logs its growth at warn, at
// most once every DropLogInterval. Safe for concurrent use.
func (a *Actor) Dropped() uint64 {
	return a.reports.refused() + a.invalid.Load() + a.pend.refused.Load() + a.pend.lost.Load()
}

// Coalesced returns how many reports found the report buffer full and were
// coalesced into the pending table instead, to be applied at the actor's
// next drain. They are not lost; a growing count says the buffer is small
// for the bursts it sees (see WithBuffer). It only grows. Safe for
// concurrent use.
func (a *Actor) Coalesced() uint64 {
	// A refusal is counted after the overflow that led to it, so loading
	// the refusals first keeps the difference from going below zero.
	refused := a.pend.refused.Load()
	return a.reports.overflowed() - refused
}

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
//   - tick (the injected clock's Ticker): drop ended blocks, and warn about
//     dropped reports (rate-limited by the same clock).
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
			a.ttfbPublish()
			if len(a.importc) > 0 {
				a.applyImports(<-a.importc)
			}
			a.warnDropped(a.clock.Now().UnixNano())
			return
		case <-bell:
			if a.drain(false) > 0 && a.rest > 0 {
				bell, restc = nil, rest.C
				rest.Reset(a.rest)
			}
		case <-restc:
			bell, restc = a.reports.doorbell, nil
		case r := <-a.ttfbc():
			a.ttfbTake(r)
		case <-tick.C:
			a.ttfbPublish()
			a.warnDropped(a.expire())
		case im := <-a.importc:
			a.applyImports(im)
		case req := <-a.queryc:
			a.drain(false)
			if len(a.importc) > 0 {
				a.applyImports(<-a.importc) // imports accepted before the query, too
			}
			a.ttfbPublish()
			now := a.expire()
			var out []Block
			if req.Q == queryBlocks {
				out = a.state.Blocks(now)
			}
			req.Respond(out)
		}
	}
}

// drain takes every stripe's batch and the pending table's coalesced
// reports, applies them, publishes one snapshot if any deadline changed,
// logs the transitions and calls onBlock, and returns how many reports it
// applied (a pending slot counts as one). final closes the stripes and the
// table for good.
func (a *Actor) drain(final bool) (n int) {
	// Looked up once per drain, not cached at New: the host may change the
	// level of its logger at run time.
	track := a.tracking()
	changed := false
	for i := range a.reports.s {
		batch := a.reports.take(i, a.spare[i], final)
		if batch == nil {
			continue
		}
		for j := range batch {
			if batch[j].minTriggers < 0 {
				a.outcomes = append(a.outcomes, batch[j])
				continue
			}
			changed = a.apply(&batch[j], track) || changed
		}
		n += len(batch)
		a.spare[i] = batch[:0]
	}
	// Passive-health outcomes in the order they happened, across stripes:
	// a streak is about order, and the stripes of two cores interleave
	// (measured: a target failing every other attempt was ejected when
	// one stripe's five failures were applied before the other stripe's
	// successes between them). Blocks and latency events need no order.
	if len(a.outcomes) > 0 {
		slices.SortStableFunc(a.outcomes, func(x, y report) int { return cmp.Compare(x.at, y.at) })
		for j := range a.outcomes {
			changed = a.apply(&a.outcomes[j], track) || changed
		}
		a.outcomes = a.outcomes[:0]
	}
	// After the stripes: a final drain closes the table only once no stripe
	// accepts any more, and a reporter whose stripe refused as full is
	// already inside the table (or will find it closed).
	if final || a.pend.dirty() {
		c, m := a.applyPending(a.pend.flip(final), track)
		changed = c || changed
		n += m
	}
	if changed {
		a.publish()
		a.logChanges()
	}
	for _, st := range a.settled {
		a.attention[st.id].Add(-st.n)
	}
	a.settled = a.settled[:0]
	return n
}

// applyPending applies and clears the slots of one generation of the
// pending table, which no reporter writes any more. See pending for why a
// slot's latency events are applied as n events at its latest time.
func (a *Actor) applyPending(g *pendingGen, track bool) (changed bool, n int) {
	if !g.dirty.Load() {
		return false, 0
	}
	g.dirty.Store(false)
	for id := range g.slots {
		sl := &g.slots[id]
		if until := sl.retryAfter.Load(); until != 0 {
			sl.retryAfter.Store(0)
			changed = a.apply(&report{at: until, id: int32(id)}, track) || changed
			n++
		}
		if f, s := sl.fails.Load(), sl.succs.Load(); f != 0 || s != 0 {
			fAt, sAt := sl.failAt.Load(), sl.succAt.Load()
			sl.fails.Store(0)
			sl.succs.Store(0)
			sl.failAt.Store(0)
			sl.succAt.Store(0)
			n++
			succ := report{at: sAt, id: int32(id), minTriggers: kindSuccess}
			fail := report{at: fAt, id: int32(id), minTriggers: kindFailure}
			// Coalescing keeps the counts and the latest time of each
			// kind, not their order. Failures alone are that many in a
			// row. With successes too, only the tail is known: a success
			// last leaves no streak; a failure last, a streak of at
			// least one. Applying fewer failures than were reported is
			// the safe side: an ejection is the engine's own guess.
			applied := 0
			switch {
			case s == 0:
				applied = min(int(f), a.state.maxConsecutive(id))
			case f != 0 && fAt > sAt:
				changed = a.apply(&succ, track) || changed
				applied = 1
			default:
				changed = a.apply(&succ, track) || changed
			}
			for range applied {
				changed = a.apply(&fail, track) || changed
			}
			// apply settles one failure per failure it applies; the
			// others coalesced here are settled as well.
			if extra := int(f) - applied; extra > 0 {
				a.settled = append(a.settled, settle{int32(id), int32(extra)})
			}
		}
		rule := sl.rule.Load()
		if rule == 0 {
			continue
		}
		count, lo, hi := int64(sl.count.Load()), sl.lo.Load(), sl.hi.Load()
		sl.rule.Store(0)
		sl.count.Store(0)
		sl.lo.Store(math.MaxInt64)
		sl.hi.Store(0)
		n++
		lr := a.pend.rules[rule-1]
		r := report{window: lr.window, block: lr.block, id: int32(id), minTriggers: lr.minTriggers}
		if count > 1 && hi-lo >= int64(max(lr.window, 1)) {
			// The actor was away a whole window: only lo and hi are known
			// to be event times.
			a.pend.lost.Add(uint64(count - 2))
			r.at = lo
			changed = a.apply(&r, track) || changed
			count = 1
		}
		// count events at one instant with threshold m trigger once per m
		// and leave count mod m behind: m + count mod m events do the same.
		m := int64(min(max(lr.minTriggers, 1), int32(a.state.k)))
		if count >= m {
			count = m + count%m
		}
		r.at = hi
		for range count {
			changed = a.apply(&r, track) || changed
		}
	}
	return changed, n
}

// publish stores a new snapshot of the state for readers.
func (a *Actor) publish() {
	snap := a.state.Snapshot()
	snap.probes, snap.attention = a.probes, a.attention
	a.snap.Store(snap)
	a.published++
}

// apply applies one report to the state and reports whether a deadline
// changed; with track it records the change for logChanges.
func (a *Actor) apply(r *report, track bool) (changed bool) {
	s := a.state
	id := int(r.id)
	if r.minTriggers < 0 {
		return a.applyOutcome(r, track)
	}
	k := RetryAfter
	if r.minTriggers > 0 {
		k = Latency
	}
	prev := s.deadline(k, id)
	if k == RetryAfter {
		changed = s.BlockRetryAfter(id, r.at)
	} else {
		_, _, changed = s.latencyEvent(id, r.at, int(r.minTriggers), r.window, r.block)
	}
	if changed && track {
		a.changes = append(a.changes, change{id: id, kind: k, prev: prev, until: s.deadline(k, id)})
	}
	return changed
}

// applyOutcome applies a passive-health report. It reports a change when
// the snapshot must show it: an ejection, a recovery, or a streak that
// began or ended (Status.Suspect).
func (a *Actor) applyOutcome(r *report, track bool) bool {
	s, id := a.state, int(r.id)
	if uint(id) >= uint(len(s.ej)) {
		return false
	}
	e := &s.ej[id]
	wasSuspect := e.suspect()
	defer a.markSuspect(id)
	streak := e.streak
	if r.minTriggers == kindSuccess {
		if s.Success(id, r.at) {
			a.probes[id].Store(0)
			if track {
				a.changes = append(a.changes, change{id: id, kind: Ejected, recovered: true, until: r.at})
			}
			return true
		}
		if a.factc != nil && streak > 0 && e.streak == 0 && e.ejections == 0 {
			a.changes = append(a.changes, change{id: id, kind: Ejected, until: r.at, clear: true})
		}
		return wasSuspect
	}
	a.settled = append(a.settled, settle{int32(id), 1})
	prev := e.until
	ejected, until := s.Failure(id, r.at)
	if !ejected && a.factc != nil && e.streak > streak {
		a.changes = append(a.changes, change{id: id, kind: Ejected, until: r.at, strike: true})
	}
	if ejected {
		// A claimer reading an older snapshot (where id was half-open)
		// finds the claim taken until the new ejection ends.
		a.probes[id].Store(until)
		if track {
			a.changes = append(a.changes, change{id: id, kind: Ejected, prev: prev, until: until, n: int(e.ejections)})
		}
		return true
	}
	return !wasSuspect && e.streak > 0
}

// attentionBit marks, in attention[id], that the State has a streak or an
// ejection for id; below it count the failure reports not applied yet.
const attentionBit = 1 << 24

// markSuspect sets or clears id's attention bit to match the State.
func (a *Actor) markSuspect(id int) {
	if now := a.state.ej[id].suspect(); now != a.suspect[id] {
		a.suspect[id] = now
		if now {
			a.attention[id].Add(attentionBit)
		} else {
			a.attention[id].Add(-attentionBit)
		}
	}
}

// logChanges logs the transitions collected by apply and calls onBlock for
// each block created. A change whose previous deadline was still ahead of
// the actor's clock extends a live block; any other creates one, so a block
// created and extended in one batch is created once, and a deadline already
// past is not announced at all. Nothing here runs on a
// request goroutine; with a disabled level a log line costs a Check.
func (a *Actor) logChanges() {
	if len(a.changes) == 0 {
		return
	}
	now := a.clock.Now().UnixNano()
	for _, c := range a.changes {
		if a.factc != nil {
			a.export(c, now)
		}
		if c.strike || c.clear {
			continue
		}
		if c.kind == Ejected {
			a.logEjection(c, now)
			continue
		}
		if c.until <= now {
			// A deadline already past by the actor's clock (a late report,
			// or clocks apart) blocks nothing: nothing to announce.
			continue
		}
		lvl, msg := zapcore.InfoLevel, "block created"
		created := c.prev <= now
		if created {
			a.since[c.kind][c.id] = now
		} else {
			lvl, msg = zapcore.DebugLevel, "block extended"
		}
		d := time.Duration(c.until - now)
		if ce := a.log.Check(lvl, msg); ce != nil {
			ce.Write(
				zap.String("id", a.state.names[c.id]),
				zap.String("scope", a.scope(c.id)),
				zap.String("apply_to", "global"),
				zap.Stringer("kind", c.kind),
				zap.Time("until", time.Unix(0, c.until)),
				zap.Duration("duration", d),
			)
		}
		if created && a.onBlock != nil {
			a.onBlock(a.state.names[c.id], c.kind, d)
		}
	}
	a.changes = a.changes[:0]
}

// logEjection logs a passive-health transition and calls its hook.
func (a *Actor) logEjection(c change, now int64) {
	name := a.state.names[c.id]
	if c.recovered {
		if ce := a.log.Check(zapcore.InfoLevel, "target recovered"); ce != nil {
			ce.Write(zap.String("id", name), zap.String("scope", a.scope(c.id)))
		}
		if a.onRecover != nil {
			a.onRecover(name)
		}
		return
	}
	d := time.Duration(c.until - now)
	msg := "target ejected"
	if c.n > 1 {
		msg = "target ejected again" // its probe failed
	}
	if ce := a.log.Check(zapcore.InfoLevel, msg); ce != nil {
		ce.Write(
			zap.String("id", name),
			zap.String("scope", a.scope(c.id)),
			zap.Int("ejections", c.n),
			zap.Time("until", time.Unix(0, c.until)),
			zap.Duration("duration", d),
		)
	}
	if a.onEject != nil {
		a.onEject(name, d, c.n)
	}
}

// scope names what an identifier is, in the words of the configuration's
// scope key.
func (a *Actor) scope(id int) string {
	if id < a.state.nt {
		return "target"
	}
	return "provider"
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
		since := a.since[b.Kind][b.ID]
		a.since[b.Kind][b.ID] = 0
		if ce := a.log.Check(zapcore.InfoLevel, "block expired"); ce != nil {
			fields := [...]zap.Field{
				zap.String("id", b.Name),
				zap.String("scope", a.scope(b.ID)),
				zap.String("apply_to", "global"),
				zap.Stringer("kind", b.Kind),
				zap.Time("until", time.Unix(0, b.Until)),
				zap.Duration("duration", time.Duration(b.Until-since)),
			}
			if since == 0 || since > b.Until {
				// Created before anything tracked it: only its deadline is
				// known.
				ce.Write(fields[:5]...)
				continue
			}
			ce.Write(fields[:]...)
		}
	}
	return now
}

// warnDropped logs at warn how many reports were dropped since it last
// did, if any were, at most once every DropLogInterval by the actor's
// clock.
func (a *Actor) warnDropped(now int64) {
	total := a.Dropped()
	if total == a.warnedDropped || (a.warnedAt != 0 && now-a.warnedAt < int64(DropLogInterval)) {
		return
	}
	if ce := a.log.Check(zapcore.WarnLevel, "health reports dropped"); ce != nil {
		ce.Write(
			zap.Uint64("dropped", total-a.warnedDropped),
			zap.Uint64("total", total),
			zap.Uint64("coalesced", a.Coalesced()),
		)
	}
	a.warnedDropped, a.warnedAt = total, now
}
