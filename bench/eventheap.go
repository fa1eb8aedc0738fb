package bench

// event is one thing that happens at a virtual time. Ties are broken by
// seq, the order in which events were scheduled, so that a run never
// depends on how the heap happens to arrange equal keys.
type event struct {
	at   int64 // virtual unix ns
	seq  uint64
	slot int32 // the request's slot
	kind evKind
}

type evKind uint8

const (
	evArrive    evKind = iota // a request arrives
	evStart                   // an attempt starts after the wait the machine asked for
	evEnd                     // an attempt's outcome is known: Observe it
	evCut                     // the request's deadline cuts the attempt in flight
	evStreamEnd               // a delivered stream ends
	evStreamCut               // the request's deadline cuts a delivered stream
	evHedge                   // the hedge delay of an attempt has passed
	evShare                   // a fact of one replica reaches the others
)

// eventHeap is a binary min-heap of events by (at, seq). It is written out
// rather than built on container/heap, whose interface methods box every
// pushed value: this one allocates only when it outgrows its array.
type eventHeap struct {
	ev  []event
	seq uint64
}

func (h *eventHeap) len() int { return len(h.ev) }

func less(a, b *event) bool {
	return a.at < b.at || (a.at == b.at && a.seq < b.seq)
}

// push schedules an event and returns its seq, which names it: an event
// whose seq its request no longer expects (an attempt abandoned to a
// hedge) is stale and skipped.
func (h *eventHeap) push(at int64, kind evKind, slot int32) uint64 {
	h.seq++
	h.ev = append(h.ev, event{at: at, seq: h.seq, slot: slot, kind: kind})
	i := len(h.ev) - 1
	e := h.ev[i]
	for i > 0 {
		p := (i - 1) / 2
		if !less(&e, &h.ev[p]) {
			break
		}
		h.ev[i] = h.ev[p]
		i = p
	}
	h.ev[i] = e
	return h.seq
}

func (h *eventHeap) pop() event {
	top := h.ev[0]
	n := len(h.ev) - 1
	last := h.ev[n]
	h.ev = h.ev[:n]
	if n == 0 {
		return top
	}
	i := 0
	for {
		c := 2*i + 1
		if c >= n {
			break
		}
		if c+1 < n && less(&h.ev[c+1], &h.ev[c]) {
			c++
		}
		if !less(&h.ev[c], &last) {
			break
		}
		h.ev[i] = h.ev[c]
		i = c
	}
	h.ev[i] = last
	return top
}
