package bench

import (
	"time"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

// simHealth is the simulation's health: the synchronous state
// (engine.SyncHealth) plus the times to first token a hedge's
// delay_percentile follows, which the health actor keeps in a real run.
// The actor publishes their percentiles once a second; in virtual time
// the table is rebuilt after every ttfbRefresh samples instead, which
// costs a sort of one target's samples each time and never reads a
// clock. Single goroutine, like the rest of a simulation.
type simHealth struct {
	engine.Health
	w     *health.TTFBWindow
	tb    *health.TTFBTable
	fresh int
}

const ttfbRefresh = 32

func newSimHealth(h engine.Health, c *policy.Compiled) engine.Health {
	w := health.NewTTFBWindow(c)
	if w == nil {
		return h // no policy hedges by percentile
	}
	return &simHealth{Health: h, w: w, tb: w.Table()}
}

// ReportTTFB records a time to first token of target t.
func (h *simHealth) ReportTTFB(t int, d time.Duration) bool {
	h.w.Observe(t, d)
	if h.fresh++; h.fresh >= ttfbRefresh {
		h.tb, h.fresh = h.w.Table(), 0
	}
	return true
}

// TTFB returns the k-th percentile of target t's recent times to first
// token, and whether enough are known.
func (h *simHealth) TTFB(t, k int) (time.Duration, bool) { return h.tb.Percentile(t, k) }
