package health

import (
	"math"
	"strconv"
	"time"

	"github.com/reroute-go/reroute/policy"
)

// Kind is the kind of a block (docs/behaviour.md#when-a-target-is-blocked): a block is keyed by identifier and
// kind, so one identifier can carry one block of each kind at once. The zero
// value is RetryAfter. Kind is a plain value, safe for concurrent use.
type Kind uint8

// The kinds of block.
const (
	// RetryAfter is a block created by a Retry-After (or rate-limit reset)
	// answer (docs/behaviour.md#retry-after-scope-and-apply_to). Waiting it out is allowed.
	RetryAfter Kind = iota
	// Latency is a block created when min_triggers latency events fell
	// within the trigger window (docs/behaviour.md#latency-blocks). Only time lifts it.
	Latency

	// numKinds is the number of kinds kept as deadlines per identifier.
	numKinds = 2

	// Ejected is passive health's ejection of an identifier that kept
	// failing (docs/behaviour.md#passive-health). It is listed by Blocks
	// beside the other kinds but kept apart from them: when its cooldown
	// ends the identifier is half-open, not healthy, until a probe's
	// outcome decides.
	Ejected Kind = numKinds
)

// String returns "retry_after", "latency" or "ejected", the names used in
// logs and metrics; any other value renders as "Kind(n)".
func (k Kind) String() string {
	switch k {
	case RetryAfter:
		return "retry_after"
	case Latency:
		return "latency"
	case Ejected:
		return "ejected"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Block is one recorded block, as returned by [State.Blocks],
// [State.Expire] and [Actor.Blocks]. It is a plain value: copying it is
// safe and it refers to nothing mutable. The zero Block means nothing.
type Block struct {
	ID    int    // policy.Compiled identifier: a target index, or NumTargets()+provider index
	Name  string // target id ("openai/gpt-4o") or provider name ("openai")
	Kind  Kind
	Until int64 // unix nanoseconds at which the block stops applying
	// Ejections (Kind Ejected) is the ejection's number among consecutive
	// ejections: 1 for the first, more after failed probes.
	Ejections int
}

// State is the pure core of the health state: every Retry-After and
// latency block, and the recent latency events of every identifier. It has
// no goroutines, no clock and no logging; time is passed in as unix
// nanoseconds, which is what lets tests and the simulator drive it in
// virtual time.
//
// State is NOT safe for concurrent use: in the process exactly one goroutine
// (the [Actor]) owns it, and readers look at immutable [Snapshot]s instead.
// A nil or zero State is not usable; make one with [NewState].
//
// Identifiers are those of the [policy.Compiled] it was made from: target i
// is identifier i, provider j is identifier NumTargets()+j. Every array is
// sized from the configuration when the State is made and never grows: an
// identifier out of range is ignored and counted (see Ignored), so unknown
// names cannot enter and memory is bounded by the configuration, not by
// traffic or history.
type State struct {
	nt       int      // number of targets
	names    []string // identifier → target id or provider name
	provider []int    // target → identifier of its provider

	// until[k][id] is the end of the block of kind k on id in unix
	// nanoseconds; 0 means none is recorded. A recorded block stays until
	// Expire drops it, even after it ended, which is what lets a Snapshot's
	// Clear tell "never blocked since the last clean-up" apart.
	until [numKinds][]int64

	// Trigger events, one ring of capacity k per identifier, kept sorted
	// oldest first. k is the largest min_triggers in the configuration:
	// once k events are inside a window the threshold is reached whatever
	// min_triggers is, so older events cannot change any answer.
	k      int
	events []int64 // identifier id's ring is events[id*k : id*k+k]
	head   []int32 // index of the oldest event of each ring
	count  []int32 // number of events in each ring
	// maxWindow is the longest trigger window in the configuration (or
	// passed to LatencyEvent since): events older than that are useless.
	maxWindow time.Duration

	// ej[id] is the passive health of identifier id (see ejection).
	ej []ejection

	ignored uint64
	expired []Block // reused by Expire
}

// NewState returns an empty State for the identifiers of c. It sizes every
// array from c: two block deadlines per identifier, and a ring of trigger
// events per identifier whose capacity is the largest on_high_latency
// min_triggers among c.Rules (at least 1; memory is NumIDs × that many
// int64s, so a configuration with a huge min_triggers pays for it). c must
// not be nil; the State copies what it needs and keeps no reference to it.
func NewState(c *policy.Compiled) *State {
	n := c.NumIDs()
	s := &State{
		nt:       c.NumTargets(),
		names:    make([]string, n),
		provider: make([]int, c.NumTargets()),
		k:        1,
	}
	for id := range n {
		s.names[id] = c.IDName(id)
	}
	for t := range s.nt {
		s.provider[t] = c.ProviderID(t)
	}
	for _, r := range c.Rules {
		if r == nil || r.Latency == nil {
			continue
		}
		s.k = max(s.k, r.Latency.MinTriggers)
		s.maxWindow = max(s.maxWindow, r.Latency.Window)
	}
	for k := range s.until {
		s.until[k] = make([]int64, n)
	}
	s.ej = ejectionRules(c)
	s.events = make([]int64, n*s.k)
	s.head = make([]int32, n)
	s.count = make([]int32, n)
	return s
}

// NumIDs returns the number of identifiers the State was sized for.
func (s *State) NumIDs() int { return len(s.names) }

// Ignored returns how many calls named an identifier out of range and were
// ignored. It only grows.
func (s *State) Ignored() uint64 { return s.ignored }

func (s *State) valid(id int) bool {
	if uint(id) >= uint(len(s.names)) {
		s.ignored++
		return false
	}
	return true
}

// BlockRetryAfter records a Retry-After block on identifier id until the
// given unix nanosecond. Max-expiration (docs/behaviour.md#when-a-target-is-blocked): it replaces an existing
// retry-after block of id only if it ends later, and reports whether the
// recorded deadline changed. until ≤ 0 never changes anything; an until
// already in the past is recorded (it blocks nothing and Expire drops it).
// An out-of-range id is ignored, counted, and reports false.
func (s *State) BlockRetryAfter(id int, until int64) (changed bool) {
	if !s.valid(id) {
		return false
	}
	return s.extend(RetryAfter, id, until)
}

func (s *State) extend(k Kind, id int, until int64) bool {
	if until <= s.until[k][id] {
		return false
	}
	s.until[k][id] = until
	return true
}

// LatencyEvent records a latency event of identifier id at time now and
// applies the trigger rule of docs/behaviour.md#latency-blocks: when the events of id within the
// sliding window (now-window, now] number at least minTriggers, a latency
// block until now+block is recorded with max-expiration and the window of
// id is cleared. blocked reports whether the threshold was reached by this
// event; until is then the end of id's latency block (which may be later
// than now+block if an earlier block ends later). Nothing but time lifts a
// latency block.
//
// Reports from concurrent attempts can arrive slightly out of order, so an
// event stamped later than now that is already recorded counts as inside
// the window too (the window is every recorded event later than
// now-window), and the block then runs from that latest event. This makes
// the outcome of a set of events independent of their arrival order.
//
// minTriggers is clamped to [1, k], where k is the largest min_triggers of
// the configuration (the capacity of the ring; the engine only passes
// configured values). window < 1ns counts as 1ns; a window longer than any
// configured one raises the age at which Expire forgets events. block ≤ 0
// records no block (the window is still cleared). An out-of-range id is
// ignored, counted, and reports (false, 0).
func (s *State) LatencyEvent(id int, now int64, minTriggers int, window, block time.Duration) (blocked bool, until int64) {
	blocked, until, _ = s.latencyEvent(id, now, minTriggers, window, block)
	return blocked, until
}

// latencyEvent is LatencyEvent that also reports whether id's latency block
// changed, which is what the actor publishes on.
func (s *State) latencyEvent(id int, now int64, minTriggers int, window, block time.Duration) (blocked bool, until int64, changed bool) {
	if !s.valid(id) {
		return false, 0, false
	}
	window = max(window, 1)
	s.maxWindow = max(s.maxWindow, window)
	m := min(max(minTriggers, 1), s.k)

	s.record(id, now)
	if s.inWindow(id, now-int64(window)) < m {
		return false, 0, false
	}
	// The block runs from the latest event of the window, which is now
	// unless a report stamped later arrived first: so the answer does not
	// depend on the order in which concurrent reports were applied.
	last := max(now, s.newest(id))
	s.count[id], s.head[id] = 0, 0
	if block > 0 {
		changed = s.extend(Latency, id, addSat(last, block))
	}
	return true, s.until[Latency][id], changed
}

// newest returns the latest event time of id's ring, which must not be
// empty.
func (s *State) newest(id int) int64 {
	k := s.k
	return s.events[id*k+(int(s.head[id])+int(s.count[id])-1)%k]
}

// record inserts event time e into id's ring, keeping the k latest times in
// ascending order. Arrivals are nearly always in order, so the insertion
// loop runs zero times in the common case.
func (s *State) record(id int, e int64) {
	k := s.k
	ring := s.events[id*k : id*k+k]
	h, n := int(s.head[id]), int(s.count[id])
	if n == k {
		if e <= ring[h] {
			return // older than the k kept: it cannot change any count
		}
		h, n = (h+1)%k, n-1
	}
	i := n
	for ; i > 0 && ring[(h+i-1)%k] > e; i-- {
		ring[(h+i)%k] = ring[(h+i-1)%k]
	}
	ring[(h+i)%k] = e
	s.head[id], s.count[id] = int32(h), int32(n+1)
}

// inWindow counts the events of id later than after.
func (s *State) inWindow(id int, after int64) int {
	k := s.k
	ring := s.events[id*k : id*k+k]
	h, n := int(s.head[id]), int(s.count[id])
	c := 0
	for i := n - 1; i >= 0 && ring[(h+i)%k] > after; i-- {
		c++
	}
	return c
}

// Lookup answers whether target is blocked at now, by what and until when,
// combining the blocks of the target's own identifier and of its
// provider's (docs/behaviour.md#when-a-target-is-blocked). A block whose Until equals now is over. A target
// out of range is not blocked (and is not counted: Lookup changes nothing).
func (s *State) Lookup(target int, now int64) Status {
	if uint(target) >= uint(s.nt) {
		return Status{}
	}
	return s.entry(target).status(now)
}

// entry folds the four deadlines that can cover target into what a
// Snapshot stores for it.
func (s *State) entry(t int) entry {
	p := s.provider[t]
	ra, lat := s.until[RetryAfter], s.until[Latency]
	e := entry{lat: max(lat[t], lat[p]), ejID: -1}
	e.until, e.kind = fold(max(ra[t], ra[p]), e.lat)
	// Passive health: the target's own, or its provider's; of two
	// ejections the one that ends later binds.
	for _, id := range [2]int{t, p} {
		x := &s.ej[id]
		if x.suspect() {
			e.suspect = true
		}
		if x.ejections > 0 && (e.ejID < 0 || x.until > e.ej) {
			e.ej, e.ejID = x.until, int32(id)
		}
	}
	return e
}

// fold is the deadline and kind of a target covered by a Retry-After block
// ending at ra and a latency block ending at lat (0: none): the later one,
// and on a tie Latency, the block that cannot be waited out.
func fold(ra, lat int64) (until int64, kind Kind) {
	if lat >= ra && lat != 0 {
		return lat, Latency
	}
	return ra, RetryAfter
}

// Fold is the Status, at now, of a target covered by a Retry-After block
// ending at ra and a latency block ending at lat (0: none), folded as the
// State folds a target's own and its provider's blocks. It serves holders
// of blocks kept outside a State (a request's own).
func Fold(ra, lat, now int64) Status {
	until, kind := fold(ra, lat)
	return Status{Until: until, Kind: kind, Latency: lat > now}
}

// Expire drops every block that has ended at now (Until ≤ now) and every
// trigger event older than the longest trigger window, and returns the
// blocks it dropped so the caller can log them. The returned slice is
// reused by the next call to Expire; copy it to keep it.
//
// Expired blocks need no Expire to stop blocking (Lookup compares with
// now); Expire is what keeps memory and Snapshot.Clear tidy. Its cost is
// proportional to the number of identifiers.
func (s *State) Expire(now int64) (expired []Block) {
	s.expired = s.expired[:0]
	for k := range s.until {
		for id, u := range s.until[k] {
			if u != 0 && u <= now {
				s.expired = append(s.expired, Block{ID: id, Name: s.names[id], Kind: Kind(k), Until: u})
				s.until[k][id] = 0
			}
		}
	}
	old := now - int64(s.maxWindow)
	for id := range s.count {
		k := s.k
		ring := s.events[id*k : id*k+k]
		h, n := int(s.head[id]), int(s.count[id])
		for n > 0 && ring[h] <= old {
			h, n = (h+1)%k, n-1
		}
		if n == 0 {
			h = 0
		}
		s.head[id], s.count[id] = int32(h), int32(n)
	}
	return s.expired
}

// Blocks returns the blocks live at now (Until > now), ordered by kind and
// then identifier, in a new slice, ejections (whose cooldown has not ended)
// last. It is meant for debugging and metrics.
func (s *State) Blocks(now int64) []Block {
	var out []Block
	for k := range s.until {
		for id, u := range s.until[k] {
			if u > now {
				out = append(out, Block{ID: id, Name: s.names[id], Kind: Kind(k), Until: u})
			}
		}
	}
	for id := range s.ej {
		if e := &s.ej[id]; e.ejections > 0 && e.until > now {
			out = append(out, Block{ID: id, Name: s.names[id], Kind: Ejected, Until: e.until, Ejections: int(e.ejections)})
		}
	}
	return out
}

// Snapshot returns an immutable copy of what readers need: for every
// target, the folded deadline and kind of the blocks covering it. It
// allocates once for up to 64 targets, twice above.
func (s *State) Snapshot() *Snapshot {
	snap := newSnapshot(s.nt)
	for t := range snap.entries {
		snap.entries[t] = s.entry(t)
	}
	return snap
}

// deadline returns the recorded deadline of the block of kind k on id, 0 when
// none. id must be in range.
func (s *State) deadline(k Kind, id int) int64 { return s.until[k][id] }

// addSat returns now+d, saturating instead of wrapping around.
func addSat(now int64, d time.Duration) int64 {
	if d > 0 && now > math.MaxInt64-int64(d) {
		return math.MaxInt64
	}
	return now + int64(d)
}
