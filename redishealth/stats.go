package redishealth

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Stats is what a Sharer has done so far. Counters only grow. It is a
// plain value.
type Stats struct {
	ReplicaID string
	// Connected: subscribed to the channel now, and the live facts were
	// loaded at the (re)connection.
	Connected bool
	// Connects counts successful (re)connections; ConnectErrors the
	// attempts that failed.
	Connects, ConnectErrors uint64

	// FactsSent counts this replica's facts published; FactsReceived the
	// other replicas' facts applied to the actor (from messages and from
	// the store at a (re)connection: FactsLoaded of them).
	FactsSent, FactsReceived, FactsLoaded uint64
	// FactsCapped counts received facts whose time left was cut to this
	// configuration's maximum.
	FactsCapped uint64
	// Echoes counts this replica's own messages, ignored.
	Echoes uint64

	// Drops, by reason. QueueFull: the actor's fact sink was full.
	// Unsent: facts not published because Redis was unreachable (the
	// live ones are written again at the reconnection). Oversized,
	// Malformed: messages or stored values refused whole. Absurd: facts
	// whose duration is not positive or over a day. Unknown: facts naming
	// a target or provider this configuration does not have, or one it
	// has no such rule for (a latency block without on_high_latency, an
	// ejection without passive health). ImportFull: the actor's import
	// queue was full.
	QueueFull, Unsent, Oversized, Malformed, Absurd, Unknown, ImportFull uint64
	// SendErrors counts failed writes to Redis.
	SendErrors uint64

	// Probe locks (probe_lock): won (this replica probes), lost (another
	// does; the target stays ejected here until its outcome or the lock's
	// end) and errors (Redis did not answer: this replica probes on its
	// own).
	LocksWon, LocksLost, LockErrors uint64
	// Replayed counts recoveries made while Redis was unreachable and
	// sent at the reconnection (see replay.go: newer ejections stored
	// are not superseded).
	Replayed uint64

	// DelayP50 and DelayP99 are quantiles of the propagation delay of the
	// last DelaySamples messages received (at most 4096): the receiver's
	// wall clock minus the sender's at sending. They are meaningful when
	// the replicas' clocks agree (one host, or NTP); 0 before any.
	DelayP50, DelayP99 time.Duration
	DelaySamples       int
}

// counters are the Sharer's live counts.
type counters struct {
	connects, connectErrors                                   atomic.Uint64
	sent, received, loaded, capped, echoes                    atomic.Uint64
	unsent, oversized, malformed, absurd, unknown, importFull atomic.Uint64
	sendErrors                                                atomic.Uint64
	locksWon, locksLost, lockErrors                           atomic.Uint64
	replayed                                                  atomic.Uint64
	dropsLogged                                               uint64 // the probe loop's only
}

// delays keeps the latest propagation delays for quantiles.
type delays struct {
	mu   sync.Mutex
	ring [4096]time.Duration
	n    int // samples written, ever
}

func (d *delays) add(v time.Duration) {
	d.mu.Lock()
	d.ring[d.n%len(d.ring)] = v
	d.n++
	d.mu.Unlock()
}

// quantiles returns the p50 and p99 of the samples kept, and how many.
func (d *delays) quantiles() (p50, p99 time.Duration, n int) {
	d.mu.Lock()
	n = min(d.n, len(d.ring))
	s := slices.Clone(d.ring[:n])
	d.mu.Unlock()
	if n == 0 {
		return 0, 0, 0
	}
	slices.Sort(s)
	return s[(n-1)*50/100], s[(n-1)*99/100], n
}
