package engine

import (
	"time"

	"github.com/reroute-go/reroute/health"
)

// facts are the health facts one request keeps for itself: its blocks with
// apply_to: request, and the global facts it reported until the shared
// view has them (a report reaches the health actor a few microseconds
// later, and the request's next decision must not wait for that).
//
// A request touches a handful of identifiers (one per target or provider
// it attempted), so facts are a short list searched linearly, with room
// for one inside the Machine (which is zeroed on every request, so its
// size is paid on the success path): nothing is sized by the
// configuration. The zero
// value is empty and ready.
type facts struct {
	inline [1]fact
	n      int
	more   []fact
}

// fact is what one request knows of one identifier.
type fact struct {
	id     int
	ra     int64   // end of its Retry-After block (unix ns); 0 none
	lat    int64   // end of its latency block; 0 none
	events []int64 // its latency events inside the trigger window, oldest first
}

func (f *facts) at(i int) *fact {
	if i < len(f.inline) {
		return &f.inline[i]
	}
	return &f.more[i-len(f.inline)]
}

// get returns the fact of id, adding an empty one if there is none.
func (f *facts) get(id int) *fact {
	for i := range f.n {
		if x := f.at(i); x.id == id {
			return x
		}
	}
	if f.n < len(f.inline) {
		f.inline[f.n] = fact{id: id}
	} else {
		f.more = append(f.more, fact{id: id})
	}
	f.n++
	return f.at(f.n - 1)
}

// blockRetryAfter records a Retry-After block of id until the given time,
// keeping the later of two deadlines. It reports whether the deadline
// changed.
func (f *facts) blockRetryAfter(id int, until int64) bool {
	x := f.get(id)
	if until <= x.ra {
		return false
	}
	x.ra = until
	return true
}

// latencyEvent records a latency event of id at now and applies the
// trigger rule: minTriggers events within (now-window, now] block id until
// now+block and clear its events. It reports whether a block was created
// or extended, and until when.
func (f *facts) latencyEvent(id int, now int64, minTriggers int, window, block time.Duration) (blocked bool, until int64) {
	x := f.get(id)
	after := now - int64(max(window, 1))
	kept := x.events[:0]
	for _, e := range x.events {
		if e > after {
			kept = append(kept, e)
		}
	}
	x.events = append(kept, now)
	if len(x.events) < max(minTriggers, 1) {
		return false, 0
	}
	x.events = x.events[:0]
	if u := now + int64(block); block > 0 && u > x.lat {
		x.lat = u
		return true, u
	}
	return false, x.lat
}

// lookup folds the facts covering target t (its own and its provider's,
// identifier pid) into a Status, as the shared state does (health.Fold).
func (f *facts) lookup(t, pid int, now int64) health.Status {
	var ra, lat int64
	for i := range f.n {
		if x := f.at(i); x.id == t || x.id == pid {
			ra, lat = max(ra, x.ra), max(lat, x.lat)
		}
	}
	return health.Fold(ra, lat, now)
}
