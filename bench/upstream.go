package bench

import (
	"math"
	"math/rand/v2"
	"net/http"
	"time"
)

// answer is what one attempt gets from an upstream: the status and headers
// it answers with after TTFB, the end of its body at Total, or a hang or a
// reset instead.
type answer struct {
	status int
	header http.Header // shared with the Phase: never modify
	hang   bool
	reset  bool
	ttfb   time.Duration
	total  time.Duration
}

// phase returns the index of the phase active at scenario time off, or -1
// before the first. Phases are few; a scan from the end is as fast as a
// binary search and needs no state, so the HTTP fakes can call it from any
// goroutine.
func (u *Upstream) phase(off time.Duration) int {
	for i := len(u.Phases) - 1; i >= 0; i-- {
		if u.Phases[i].At <= off {
			return i
		}
	}
	return -1
}

// answer draws the answer to an attempt that starts at scenario time off.
// Draws come from r in a fixed order (share, then latency), which keeps a
// seeded simulation reproducible.
func (u *Upstream) answer(off time.Duration, r *rand.Rand) answer {
	a := answer{status: http.StatusOK}
	lat := u.Latency
	if i := u.phase(off); i >= 0 {
		p := &u.Phases[i]
		if p.Share >= 1 || r.Float64() < p.Share {
			a.status, a.header, a.hang, a.reset, lat = p.Status, p.Header, p.Hang, p.Reset, p.Latency
		}
	}
	a.ttfb, a.total = lat.sample(r)
	if a.reset || a.status >= 300 {
		// An error answer is short: it ends with its first byte; a reset
		// happens where the first byte would have come.
		a.total = a.ttfb
	}
	return a
}

// overloaded is the answer of an upstream over its capacity.
var overloaded = answer{status: http.StatusServiceUnavailable, ttfb: OverloadDelay, total: OverloadDelay}

// sample draws one TTFB and Total: both scaled by one log-normal factor
// whose mean is 1, so a slow first byte comes with a slow body.
func (l Latency) sample(r *rand.Rand) (ttfb, total time.Duration) {
	if l.Spread == 0 {
		return l.TTFB, l.Total
	}
	f := math.Exp(l.Spread*r.NormFloat64() - l.Spread*l.Spread/2)
	return time.Duration(float64(l.TTFB) * f), time.Duration(float64(l.Total) * f)
}
