package health

// Status answers "is target T blocked at time now, by what, for how long".
// It is a plain value, safe to copy and to share. The zero Status means not
// blocked.
type Status struct {
	// Until is the unix nanosecond at which the target becomes usable
	// again: the latest expiry among the live blocks covering it (its own
	// identifier's, or its provider's). 0 or ≤ now when not blocked.
	Until int64
	// Kind is the kind of the block that ends at Until. When a retry-after
	// and a latency block end at the same instant it is Latency. Meaningless
	// when not blocked.
	Kind Kind
	// Latency reports that some live latency block covers the target, even
	// one that ends before Until: docs/behaviour.md#strategies then has same_model exhaust
	// instead of waiting.
	Latency bool
}

// Blocked reports whether the target is blocked at now: Until > now. A
// block that ends exactly at now is over.
func (s Status) Blocked(now int64) bool { return s.Until > now }

// entry is what a Snapshot keeps per target: the four deadlines that can
// cover it (retry-after and latency, own and provider) folded into two.
type entry struct {
	until int64 // latest of the four deadlines; 0 = nothing recorded
	lat   int64 // latest of the two latency deadlines; 0 = none recorded
	kind  Kind  // kind of the block ending at until
}

func (e entry) status(now int64) Status {
	return Status{Until: e.until, Kind: e.kind, Latency: e.lat > now}
}

// Snapshot is an immutable picture of the health state, indexed by target.
// The [Actor] publishes a new one whenever a block starts, is extended or is
// dropped; readers load the current one with [Actor.Snapshot] and never
// wait for the actor. A Snapshot is safe for concurrent use and is never
// modified after publication, so a reader may keep one as long as it likes
// (it only grows stale).
//
// A nil or zero Snapshot knows no target: every Lookup answers not blocked
// and every Clear true.
type Snapshot struct {
	entries []entry // indexed by target
}

// Lookup answers whether target is blocked at now (unix nanoseconds), by
// what and until when. It is an index and a compare: no locks, no
// allocation. A target out of range is not blocked.
func (s *Snapshot) Lookup(target int, now int64) Status {
	if s == nil || uint(target) >= uint(len(s.entries)) {
		return Status{}
	}
	return s.entries[target].status(now)
}

// Clear reports whether no block at all, live or already ended, is recorded
// for target or its provider. When it is true the target is certainly not
// blocked whatever the time, so the engine calls Clear first and reads the
// clock only when it is false. Ended blocks keep Clear false until the
// actor drops them (every expiry interval, or at Sync) and publishes a
// cleaned snapshot. A target out of range is clear.
func (s *Snapshot) Clear(target int) bool {
	if s == nil || uint(target) >= uint(len(s.entries)) {
		return true
	}
	return s.entries[target].until == 0
}

// Len returns the number of targets the snapshot covers: NumTargets of the
// configuration, or 0 for a nil or zero Snapshot.
func (s *Snapshot) Len() int {
	if s == nil {
		return 0
	}
	return len(s.entries)
}

// newSnapshot returns a Snapshot with n zero entries. Publishing is the
// actor's main cost when reports come one at a time, and most
// configurations have a handful of targets, so up to 64 targets the header
// and the entries share one allocation.
func newSnapshot(n int) *Snapshot {
	switch {
	case n <= 4:
		p := new(struct {
			s Snapshot
			a [4]entry
		})
		p.s.entries = p.a[:n]
		return &p.s
	case n <= 16:
		p := new(struct {
			s Snapshot
			a [16]entry
		})
		p.s.entries = p.a[:n]
		return &p.s
	case n <= 64:
		p := new(struct {
			s Snapshot
			a [64]entry
		})
		p.s.entries = p.a[:n]
		return &p.s
	}
	return &Snapshot{entries: make([]entry, n)}
}
