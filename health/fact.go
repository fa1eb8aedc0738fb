package health

import (
	"errors"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/reroute-go/reroute/policy"
)

// Fact is a process-wide health fact, as an actor exports it to other
// replicas (WithFactSink) and imports theirs (Actor.Import): a Retry-After
// or latency block, an ejection by passive health, or a recovery. It names
// its identifier by its target id or provider name, never by index, so
// that replicas whose configurations differ can exchange facts: a name the
// receiving configuration does not have is refused. It is a plain value,
// safe to copy.
type Fact struct {
	// Name is the target id ("openai/gpt-4o") or, with Provider, the
	// provider name ("openai").
	Name     string
	Provider bool
	// Kind is RetryAfter, Latency or Ejected.
	Kind Kind
	// Until is when the block or ejection ends, in unix nanoseconds by the
	// clock of the actor that exports or imports it. A host carrying facts
	// between machines sends the time left (Until minus its now) and
	// rebuilds Until from its own clock on arrival, so that clocks apart
	// do not matter. With Recovered, when the probe succeeded (0 when
	// not known).
	Until int64
	// Ejections (Kind Ejected) is the ejection's number among consecutive
	// ejections: 1 for the first, more after failed probes.
	Ejections int
	// Recovered (Kind Ejected) says that the identifier recovered: a probe
	// of it succeeded. Its Until, when not 0, is when (by the importer's
	// clock): an ejection imported afterwards that ends sooner than the
	// shortest cooldown after it began before the recovery and is ignored.
	Recovered bool
	// Hold (Kind Ejected, import only) extends an ejection the importing
	// actor already has until Until without counting a new one or telling
	// hooks: another replica holds the probe of it (see redishealth).
	Hold bool
	// Strike (Kind Ejected) is a failure that counted toward the sender's
	// failure streak without ejecting; Until is the failure's time, not an
	// end. The replicas of a fleet count their failures of an identifier
	// together: an imported strike counts toward the importer's streak as
	// its own failures do (only while it is healthy, and not when older
	// than a success it has applied), so that the fleet ejects after the
	// threshold's worth of failures in a row among all of them, as one
	// replica serving all the traffic would, instead of each replica
	// needing its own. An ejection it completes is the importer's own and
	// is exported.
	Strike bool
	// Clear (Kind Ejected) is a success at Until that ended the sender's
	// failure streak: the importer's streak ends as with its own success
	// (only while it is healthy; it never ends an ejection).
	Clear bool
}

// Errors of Actor.Import.
var (
	// ErrUnknownName: the fact names an identifier this configuration does
	// not have.
	ErrUnknownName = errors.New("health: fact names an unknown target or provider")
	// ErrImportFull: the import queue is full; the fact is dropped.
	ErrImportFull = errors.New("health: import queue full")
	// ErrBadFact: the fact's kind or time cannot be applied.
	ErrBadFact = errors.New("health: fact is not applicable")
)

// importBuffer is how many imported facts may wait for the actor. Imports
// come from one goroutine of a sharing host, in bursts of a message's
// facts; a full queue refuses (the fact stays in Redis and is loaded again
// at the next reconnection).
const importBuffer = 1024

// imported is a Fact resolved to an identifier, as it waits in importc.
type imported struct {
	id int32
	f  Fact
}

// WithFactSink makes the actor send every process-wide fact it creates from
// its own reports to c: a Retry-After or latency block created or extended
// (Until its new end), an ejection (its end and number), a recovery (Until
// its time), and a strike or clear (Until its time: a failure that counted
// toward a streak without ejecting, a success that ended a streak). An
// ejection that another replica's strike completed is this actor's own and
// is sent; other facts it imports are not sent again. The send never
// blocks: when c is full the fact is dropped and counted
// (Actor.FactsDropped). Blocks and ejections whose end is already past by
// the actor's clock are not sent. The actor never closes c. nil (the
// default) exports nothing.
func WithFactSink(c chan<- Fact) Option {
	return func(o *options) { o.facts = c }
}

// FactsDropped returns how many facts the actor could not send to its fact
// sink because it was full. Safe for concurrent use.
func (a *Actor) FactsDropped() uint64 { return a.factDrops.Load() }

// Import hands the actor a fact learned from another replica, to apply on
// its goroutine with the max-expiration merge of its own reports: a block
// or ejection that ends later than the one recorded replaces it, an earlier
// one changes nothing; a recovery ends an ejection. It never blocks. It
// returns ErrUnknownName for a name the configuration does not have,
// ErrBadFact for a kind other than the three or an Until ≤ 0 without
// Recovered, ErrImportFull when the queue is full and ErrStopped after
// Stop. Imports queued when Stop is called may be discarded.
//
// Import does not bound Until: the caller caps it by what its
// configuration allows (MaxDuration). Safe for concurrent use.
func (a *Actor) Import(f Fact) error {
	id, ok := a.ID(f.Name, f.Provider)
	switch {
	case !ok:
		return ErrUnknownName
	case f.Kind > Ejected, f.Kind != Ejected && f.ejectionFlags() > 0, f.ejectionFlags() > 1,
		!f.Recovered && f.Until <= 0:
		return ErrBadFact
	}
	select {
	case <-a.life.Done():
		return ErrStopped
	default:
	}
	select {
	case a.importc <- imported{id: int32(id), f: f}:
		return nil
	default:
		return ErrImportFull
	}
}

// ejectionFlags counts the flags of f that say what kind of ejection fact
// it is: at most one may be set.
func (f *Fact) ejectionFlags() int {
	n := 0
	for _, b := range [...]bool{f.Recovered, f.Hold, f.Strike, f.Clear} {
		if b {
			n++
		}
	}
	return n
}

// ID returns the identifier of a target id, or with provider of a
// provider name, and whether the configuration has it. Safe for
// concurrent use.
func (a *Actor) ID(name string, provider bool) (int, bool) {
	if provider {
		id, ok := a.providerIDs[name]
		return id, ok
	}
	return a.c.Lookup(name)
}

// MaxDuration is the longest fact of kind k on identifier id that the
// configuration c could create itself, by which a host caps the facts it
// imports: for RetryAfter the largest max_retry_after_seconds among the
// targets id covers (the default when they have no retry_policy), for
// Latency their largest block_duration_seconds (0 without
// on_high_latency), for Ejected the max_cooldown of id's passive health
// (0 when it is off for id). 0 means c never creates such a fact, and the
// fact should not be imported.
func MaxDuration(c *policy.Compiled, id int, k Kind) time.Duration {
	var targets []int
	switch {
	case id < 0 || id >= c.NumIDs():
		return 0
	case id < c.NumTargets():
		targets = []int{id}
	default:
		targets = c.Members[id-c.NumTargets()]
	}
	var d time.Duration
	for _, t := range targets {
		r := c.Rules[t]
		switch k {
		case RetryAfter:
			if r == nil {
				d = max(d, policy.DefaultMaxRetryAfterSeconds*time.Second)
			} else {
				d = max(d, r.RetryAfter.Max)
			}
		case Latency:
			if r != nil && r.Latency != nil {
				d = max(d, r.Latency.Block)
			}
		case Ejected:
			if e := c.Ejection[t]; e != nil && c.ID(t, e.Scope) == id {
				d = max(d, e.MaxCooldown)
			}
		}
	}
	return d
}

// tracking reports whether the transitions of a batch must be collected:
// for hooks, the fact sink or the log.
func (a *Actor) tracking() bool {
	core := a.log.Core()
	return a.onBlock != nil || a.onEject != nil || a.onRecover != nil || a.factc != nil ||
		core.Enabled(zapcore.InfoLevel) || core.Enabled(zapcore.DebugLevel)
}

// applyImports applies im and every import already queued behind it, then
// publishes once and logs the transitions (which are not exported again).
func (a *Actor) applyImports(im imported) {
	track := a.tracking()
	changed := a.applyImport(im, track)
	for range len(a.importc) {
		changed = a.applyImport(<-a.importc, track) || changed
	}
	if changed {
		a.publish()
	}
	a.logChanges()
}

// applyImport applies one imported fact and reports whether the snapshot
// must change.
func (a *Actor) applyImport(im imported, track bool) bool {
	s, id, f := a.state, int(im.id), im.f
	prev := s.ej[id].until
	if f.Kind != Ejected {
		prev = s.deadline(f.Kind, id)
	}
	if !s.Import(id, f) {
		return false
	}
	switch {
	case f.Strike || f.Clear:
		return a.applyStreakFact(id, f, prev, track)
	case f.Kind != Ejected:
		if track {
			a.changes = append(a.changes, change{id: id, kind: f.Kind, prev: prev, until: f.Until, imported: true})
		}
		return true
	case f.Hold:
		a.probes[id].Store(f.Until)
		return true
	case f.Recovered:
		a.probes[id].Store(0)
		a.markSuspect(id)
		if track {
			a.changes = append(a.changes, change{id: id, kind: Ejected, recovered: true, imported: true})
		}
		return true
	}
	a.probes[id].Store(f.Until)
	a.markSuspect(id)
	if track {
		a.changes = append(a.changes, change{id: id, kind: Ejected, prev: prev, until: f.Until, n: int(s.ej[id].ejections), imported: true})
	}
	return true
}

// Import applies a fact of another replica to identifier id (the fact's
// Name is not read), with the max-expiration merge of the State's own
// facts, and reports whether anything changed: a Retry-After or latency
// block that ends later than the one recorded replaces it; an ejection
// that ends later ejects (the number of consecutive ejections becomes the
// larger of the two; an identifier without passive health is left alone);
// a hold extends an ejection id already has without counting one; a
// recovery ends id's ejection. It is what Actor.Import does on the
// actor's goroutine, for a single-goroutine owner (the simulator). An
// out-of-range id or an unknown kind changes nothing.
func (s *State) Import(id int, f Fact) bool {
	if uint(id) >= uint(len(s.names)) {
		return false
	}
	switch {
	case f.Kind == RetryAfter || f.Kind == Latency:
		return f.Until > 0 && s.extend(f.Kind, id, f.Until)
	case f.Kind != Ejected:
		return false
	case f.Hold:
		return s.holdEjection(id, f.Until)
	case f.Recovered:
		return s.importRecovery(id, max(f.Until, 0))
	case f.Strike:
		return f.Until > 0 && s.importStrike(id, f.Until)
	case f.Clear:
		return f.Until > 0 && s.importClear(id, f.Until)
	}
	return f.Until > 0 && s.importEjection(id, f.Until, f.Ejections)
}

// Deadline returns the recorded end of the block of kind k (RetryAfter or
// Latency) on identifier id, 0 when none or out of range.
func (s *State) Deadline(k Kind, id int) int64 {
	if k >= numKinds || uint(id) >= uint(len(s.names)) {
		return 0
	}
	return s.until[k][id]
}

// export sends the fact of a local transition to the sink without waiting.
func (a *Actor) export(c change, now int64) {
	if c.imported || (!c.recovered && !c.strike && !c.clear && c.until <= now) {
		return
	}
	f := Fact{Name: a.state.names[c.id], Provider: c.id >= a.state.nt, Kind: c.kind, Until: c.until, Ejections: c.n,
		Recovered: c.recovered, Strike: c.strike, Clear: c.clear}
	select {
	case a.factc <- f:
	default:
		a.factDrops.Add(1)
	}
}

// importEjection ejects id until the given time, as another replica did:
// max-expiration on the ejection's end; the number of consecutive
// ejections becomes the larger of the two, also when the end is not later
// (so that every replica that has the ejection agrees on its number, which
// names its probe lock, and doubles the same cooldown after a failed
// probe). It reports whether anything changed. An identifier without
// passive health here is left alone.
func (s *State) importEjection(id int, until int64, n int) bool {
	e := &s.ej[id]
	n32 := int32(min(max(n, 1), 1<<16))
	if e.rule == nil || e.olderThanRecovery(until) {
		return false
	}
	if e.ejections > 0 && until <= e.until {
		if n32 <= e.ejections {
			return false
		}
		e.ejections = n32
		return true
	}
	e.ejections = max(e.ejections, n32)
	e.until, e.claim, e.streak = until, 0, 0
	return true
}

// holdEjection extends an ejection id already has (ejected or half-open)
// until the given time, counting nothing.
func (s *State) holdEjection(id int, until int64) bool {
	e := &s.ej[id]
	if e.ejections == 0 || until <= e.until {
		return false
	}
	e.until, e.claim = until, 0
	return true
}

// importRecovery ends id's ejection because another replica's probe found
// it working, at the given time (0: unknown).
func (s *State) importRecovery(id int, at int64) bool {
	e := &s.ej[id]
	if e.ejections == 0 {
		return false
	}
	e.ejections, e.until, e.claim, e.streak = 0, 0, 0, 0
	e.recovered = max(e.recovered, at)
	return true
}

// olderThanRecovery reports whether an ejection of another replica that
// ends at until was made before id's latest recovery: one made after it
// ends at least the shortest cooldown (less its 20 % spread) later, so one
// that ends sooner began before, on evidence the recovery has overruled
// (it crossed the recovery on its way, or was written back by a replica
// reconnecting).
func (e *ejection) olderThanRecovery(until int64) bool {
	return e.recovered > 0 && until < e.recovered+int64(e.rule.Cooldown)*8/10
}
