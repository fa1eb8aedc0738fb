package prom

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

// classes are the outcome classes an attempt is counted under, in
// policy.Class order: the label values of reroute_attempts_total.
var classes = []policy.Class{policy.Success, policy.SlowSuccess, policy.HTTPError, policy.Timeout, policy.LatencyFailure, policy.PassThrough}

// reasons are the exhaustion reasons, the label values of
// reroute_exhaustions_total; a reason the engine adds later is counted as
// reasonOther until the collector knows it.
var reasons = []engine.Reason{engine.ReasonMaxAttempts, engine.ReasonBudget, engine.ReasonProviders, engine.ReasonDeadline, engine.ReasonRetryLimit}

const reasonOther = "other"

// blockKinds are the kinds a block is created with (the Block hook), and
// stateKinds those the live state lists (blocks and ejections).
var (
	blockKinds = []health.Kind{health.RetryAfter, health.Latency}
	stateKinds = []health.Kind{health.RetryAfter, health.Latency, health.Ejected}
)

// The retry kinds of reroute_retries_total.
const (
	retrySame     = 0 // the next attempt goes to the target that failed
	retryFailover = 1 // it goes to another target
)

// Collector exports one engine's hooks and live state as Prometheus
// metrics. Build it with New for the configuration the engine is built
// from, pass Hooks to engine.New (engine.WithHooks), register the
// Collector on the host's own prometheus.Registerer, and Attach the engine
// so that scrapes can read its live state.
//
// Every label value comes from the configuration (target ids, provider
// names) or from a fixed set (classes, reasons, kinds), and every child is
// made at New: the number of series is fixed by the configuration and
// never grows with traffic, whatever model names clients send (a request
// for an unknown model makes no attempt and calls no hook).
//
// A Collector is safe for concurrent use: the hooks from any number of
// requests and the health actor, scrapes at the same time. The zero value
// is not usable. A Collector holds no goroutine and needs no closing; after
// the engine is closed, scrapes still report the counters, and leave out
// the live-state gauge the stopped actor can no longer give.
type Collector struct {
	opts  options
	c     *policy.Compiled
	names []string       // the unique identifier names, in identifier order (a label set)
	ids   map[string]int // identifier name → index in names; built at New, read-only after
	eng   atomic.Pointer[engine.Engine]

	// Hook-driven metrics. The vectors are what Describe and Collect walk;
	// the slices hold their children, made at New, which the hooks use
	// without a label lookup.
	attemptsVec *prometheus.CounterVec
	attempts    [][]prometheus.Counter // [target][class]
	retriesVec  *prometheus.CounterVec
	retries     [][2]prometheus.Counter // [target of the next attempt][retrySame or retryFailover]
	contVec     *prometheus.CounterVec
	conts       [][2]prometheus.Counter // [target of the continuation][retrySame or retryFailover]
	hedgesVec   *prometheus.CounterVec
	hedges      []prometheus.Counter // [target of the hedge]
	lostVec     *prometheus.CounterVec
	lost        []prometheus.Counter // [target of the abandoned attempt]
	exhaustVec  *prometheus.CounterVec
	exhaust     []prometheus.Counter // [reason], reasonOther last
	blocksVec   *prometheus.CounterVec
	blocks      []prometheus.Counter // [kind]
	ejectVec    *prometheus.CounterVec
	eject       []prometheus.Counter // [unique identifier name]
	recoverVec  *prometheus.CounterVec
	recovered   []prometheus.Counter // [unique identifier name]
	probeVec    *prometheus.CounterVec
	probes      []prometheus.Counter // [target]
	ttfbVec     *prometheus.HistogramVec
	ttfb        []prometheus.Observer // [target]
	totalVec    *prometheus.HistogramVec
	total       []prometheus.Observer // [target]
	wait        prometheus.Histogram
	overhead    prometheus.Histogram

	// Scrape-time metrics, read from the attached engine.
	activeDesc    *prometheus.Desc
	resultsDesc   *prometheus.Desc
	droppedDesc   *prometheus.Desc
	coalescedDesc *prometheus.Desc
}

// New returns a Collector for the targets and providers of c, the
// compiled configuration of the engine it will observe (cfg.Compiled() of
// a configuration Load, Parse or Finalize has finalized; or
// Engine.Compiled()). It panics if c is nil.
func New(c *policy.Compiled, opts ...Option) *Collector {
	if c == nil {
		panic("prom: New needs a compiled configuration")
	}
	o := defaults()
	for _, opt := range opts {
		opt(&o)
	}
	col := &Collector{opts: o, c: c, ids: make(map[string]int, c.NumIDs())}
	// A target id without a slash is also its provider's name: both
	// identifiers then share one label value, so that no two series of a
	// metric carry the same labels.
	for id := range c.NumIDs() {
		name := c.IDName(id)
		if _, ok := col.ids[name]; !ok {
			col.ids[name] = len(col.names)
			col.names = append(col.names, name)
		}
	}
	name := func(n string) string { return prometheus.BuildFQName(o.namespace, "", n) }
	nt := c.NumTargets()

	col.attemptsVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("attempts_total"),
		Help: "Upstream attempts finished, by target and outcome class (success, slow_success, http_error, timeout, high_latency, pass_through).",
	}, []string{"target", "class"})
	col.attempts = make([][]prometheus.Counter, nt)
	for t := range nt {
		col.attempts[t] = make([]prometheus.Counter, len(classes))
		for _, cl := range classes {
			col.attempts[t][cl] = col.attemptsVec.WithLabelValues(c.Targets[t], cl.String())
		}
	}

	col.retriesVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("retries_total"),
		Help: "Decisions to make another attempt, by the target of that attempt; kind failover when it differs from the target that failed, same_target otherwise.",
	}, []string{"target", "kind"})
	col.retries = kindChildrenOf(col.retriesVec, c.Targets)

	col.contVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("continuations_total"),
		Help: "Attempts decided to continue a streamed answer that failed after commit, by the target that continues it; kind same_target when it continues its own answer, failover otherwise.",
	}, []string{"target", "kind"})
	col.conts = kindChildrenOf(col.contVec, c.Targets)

	col.hedgesVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("hedges_total"),
		Help: "Hedges started beside an attempt whose first token was late, by the target of the hedge.",
	}, []string{"target"})
	col.lostVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("abandoned_attempts_total"),
		Help: "Attempts cancelled because the other attempt of a hedge's race answered first, by target; they are not in reroute_attempts_total.",
	}, []string{"target"})
	col.hedges = childrenOf(col.hedgesVec, c.Targets)
	col.lost = childrenOf(col.lostVec, c.Targets)

	col.exhaustVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("exhaustions_total"),
		Help: "Requests that ended without an answer to deliver, by reason; reason budget_exhausted counts the refusals of the retry budget and of max_retry_duration_ms.",
	}, []string{"reason"})
	for _, r := range reasons {
		col.exhaust = append(col.exhaust, col.exhaustVec.WithLabelValues(string(r)))
	}
	col.exhaust = append(col.exhaust, col.exhaustVec.WithLabelValues(reasonOther))

	col.blocksVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("blocks_total"),
		Help: "Blocks created (shared and per-request), by kind (retry_after, latency); extending a live block creates none.",
	}, []string{"kind"})
	for _, k := range blockKinds {
		col.blocks = append(col.blocks, col.blocksVec.WithLabelValues(k.String()))
	}

	col.ejectVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("ejections_total"),
		Help: "Ejections by passive health, by identifier (a target id, or a provider name under scope provider).",
	}, []string{"id"})
	col.recoverVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("recoveries_total"),
		Help: "Recoveries of ejected identifiers after a successful probe, by identifier.",
	}, []string{"id"})
	col.eject = childrenOf(col.ejectVec, col.names)
	col.recovered = childrenOf(col.recoverVec, col.names)

	col.probeVec = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: name("probes_total"),
		Help: "Requests that won the one probe of a half-open target, by target.",
	}, []string{"target"})
	col.ttfbVec = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    name("attempt_first_byte_seconds"),
		Help:    "Time from the start of an attempt to its response headers, by target; attempts that do not know it are left out.",
		Buckets: o.latency,
	}, []string{"target"})
	col.totalVec = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    name("attempt_duration_seconds"),
		Help:    "Time from the start of an attempt to the end of its answer, by target; a stream is observed when it ends (Result.End).",
		Buckets: o.latency,
	}, []string{"target"})
	col.probes = childrenOf(col.probeVec, c.Targets)
	col.ttfb = childrenOf(col.ttfbVec, c.Targets)
	col.total = childrenOf(col.totalVec, c.Targets)
	col.wait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    name("retry_wait_seconds"),
		Help:    "Wait the engine added before a retry (backoff or Retry-After), 0 for none.",
		Buckets: o.wait,
	})
	col.overhead = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    name("gateway_overhead_seconds"),
		Help:    "Time the gateway itself added to a request: from the body read to the answer ready to relay, less the upstream calls and the engine's waits (ObserveOverhead).",
		Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10), // 10 µs to 2.6 s
	})

	col.activeDesc = prometheus.NewDesc(name("blocks_active"),
		"Whether a shared block or an ejection of the kind (retry_after, latency, ejected) is live now on the identifier (a target id or a provider name): 1 or 0, from the health actor's state.",
		[]string{"id", "kind"}, nil)
	col.resultsDesc = prometheus.NewDesc(name("target_results_total"),
		"Attempts by target and result, from Engine.Counts: success when the answer was delivered, failure otherwise (a stream cut after commit included).",
		[]string{"target", "result"}, nil)
	col.droppedDesc = prometheus.NewDesc(name("health_reports_dropped_total"),
		"Reports to the health actor that were refused or lost.", nil, nil)
	col.coalescedDesc = prometheus.NewDesc(name("health_reports_coalesced_total"),
		"Reports to the health actor that found its buffer full and were coalesced (not lost).", nil, nil)
	return col
}

// ErrMismatch is returned by Attach for an engine whose configuration has
// other targets than the one the Collector was built for.
var ErrMismatch = errors.New("prom: the engine's targets are not the collector's")

// Attach gives the Collector the engine whose live state scrapes report:
// the blocks and ejections live now (reroute_blocks_active), the
// per-target counts and the health actor's report counters. Before Attach
// those metrics are left out of a scrape. Attaching another engine
// replaces the first; it must have the same targets in the same order
// (ErrMismatch otherwise). Safe for concurrent use with scrapes and hooks.
func (c *Collector) Attach(e *engine.Engine) error {
	if e == nil {
		return errors.New("prom: Attach needs an engine")
	}
	if got := e.Compiled(); !slices.Equal(got.Targets, c.c.Targets) || !slices.Equal(got.Providers, c.c.Providers) {
		return fmt.Errorf("%w: engine %v, collector %v", ErrMismatch, got.Targets, c.c.Targets)
	}
	c.eng.Store(e)
	return nil
}

// Hooks returns the engine hooks that feed the Collector, to pass to
// engine.New with engine.WithHooks. The Attempt and Retry hooks index
// children made at New by the events' target indices: a few atomic
// additions, no lock, no allocation, no label lookup. Block, Ejected,
// Recovered and Probe carry names, so they map the name to its child
// through a map made at New; they are rare. A name or index the
// configuration does not have is ignored. Latency is left nil: the
// attempt histograms already see every measurement.
func (c *Collector) Hooks() engine.Hooks {
	return engine.Hooks{
		Attempt:   c.attempt,
		Retry:     c.retry,
		Continue:  c.continued,
		Hedge:     c.hedge,
		Exhausted: c.exhausted,
		Block:     c.block,
		Ejected:   c.ejected,
		Recovered: c.recoveredHook,
		Probe:     c.probe,
		End:       c.end,
	}
}

// ObserveOverhead records the time a gateway itself added to a request (see
// httpproxy.WithOverheadHook, whose signature it has). Safe for concurrent
// use.
func (c *Collector) ObserveOverhead(_ string, d time.Duration) { c.overhead.Observe(d.Seconds()) }

// end observes a delivered stream's whole duration, which its attempt's
// event could not know.
func (c *Collector) end(ev engine.EndEvent) {
	if uint(ev.Index) < uint(len(c.total)) && ev.Total > 0 {
		c.total[ev.Index].Observe(ev.Total.Seconds())
	}
}

func (c *Collector) attempt(ev engine.AttemptEvent) {
	if uint(ev.Index) >= uint(len(c.attempts)) {
		return
	}
	if ev.Abandoned {
		// Cancelled for losing a race: neither an outcome of its class
		// nor a latency of its target.
		c.lost[ev.Index].Inc()
		return
	}
	if row := c.attempts[ev.Index]; uint(ev.Class) < uint(len(row)) {
		row[ev.Class].Inc()
	}
	if ev.TTFB > 0 {
		c.ttfb[ev.Index].Observe(ev.TTFB.Seconds())
	}
	if ev.Total > 0 {
		c.total[ev.Index].Observe(ev.Total.Seconds())
	}
}

func (c *Collector) retry(ev engine.RetryEvent) {
	c.countNext(c.retries, ev.FromIndex, ev.ToIndex, ev.Wait)
}

func (c *Collector) continued(ev engine.ContinueEvent) {
	c.countNext(c.conts, ev.FromIndex, ev.ToIndex, ev.Wait)
}

// countNext counts, in counters (retries or continuations), an attempt
// decided on target to after one on from, and observes the wait before
// it.
func (c *Collector) countNext(counters [][2]prometheus.Counter, from, to int, wait time.Duration) {
	if uint(to) >= uint(len(counters)) {
		return
	}
	kind := retrySame
	if to != from {
		kind = retryFailover
	}
	counters[to][kind].Inc()
	c.wait.Observe(wait.Seconds())
}

func (c *Collector) hedge(ev engine.HedgeEvent) {
	if uint(ev.ToIndex) < uint(len(c.hedges)) {
		c.hedges[ev.ToIndex].Inc()
	}
}

func (c *Collector) exhausted(r engine.Reason) {
	// A switch on constants: no map, no string hashing.
	i := len(reasons) // reasonOther
	switch r {
	case engine.ReasonMaxAttempts:
		i = 0
	case engine.ReasonBudget:
		i = 1
	case engine.ReasonProviders:
		i = 2
	case engine.ReasonDeadline:
		i = 3
	case engine.ReasonRetryLimit:
		i = 4
	}
	c.exhaust[i].Inc()
}

func (c *Collector) block(_ string, k health.Kind, _ time.Duration) {
	if uint(k) < uint(len(c.blocks)) {
		c.blocks[k].Inc()
	}
}

func (c *Collector) ejected(id string, _ time.Duration, _ int) {
	if i, ok := c.ids[id]; ok {
		c.eject[i].Inc()
	}
}

func (c *Collector) recoveredHook(id string) {
	if i, ok := c.ids[id]; ok {
		c.recovered[i].Inc()
	}
}

func (c *Collector) probe(target string) {
	if t, ok := c.c.Lookup(target); ok {
		c.probes[t].Inc()
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range c.vectors() {
		v.Describe(ch)
	}
	ch <- c.activeDesc
	ch <- c.resultsDesc
	ch <- c.droppedDesc
	ch <- c.coalescedDesc
}

// Collect implements prometheus.Collector. With an engine attached it
// first asks the health actor for its live blocks (a round trip to the
// actor, bounded by WithStateTimeout), which the actor answers after
// applying every report accepted so far: so the Block, Ejected and
// Recovered counters of the same scrape include every fact reported
// before it. It then reads the engine's counts and the counters.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if e := c.eng.Load(); e != nil {
		c.collectState(ch, e)
	}
	for _, v := range c.vectors() {
		v.Collect(ch)
	}
}

func (c *Collector) collectState(ch chan<- prometheus.Metric, e *engine.Engine) {
	if a := e.Actor(); a != nil { // an engine built WithHealth keeps no actor
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.stateTimeout)
		blocks, err := a.Blocks(ctx)
		cancel()
		// Stopped or too slow: leave the gauge out rather than report a
		// guess.
		if err == nil {
			c.collectActive(ch, blocks)
		}
		ch <- prometheus.MustNewConstMetric(c.droppedDesc, prometheus.CounterValue, float64(a.Dropped()))
		ch <- prometheus.MustNewConstMetric(c.coalescedDesc, prometheus.CounterValue, float64(a.Coalesced()))
	}
	for _, t := range c.c.Targets {
		n := e.Counts(t)
		ch <- prometheus.MustNewConstMetric(c.resultsDesc, prometheus.CounterValue, float64(n.Successes), t, "success")
		ch <- prometheus.MustNewConstMetric(c.resultsDesc, prometheus.CounterValue, float64(n.Failures), t, "failure")
	}
}

// collectActive reports, for every identifier name and state kind, 1 when
// blocks lists a live block or ejection of that kind on it, else 0.
func (c *Collector) collectActive(ch chan<- prometheus.Metric, blocks []health.Block) {
	// stateKinds are health's kinds in their numeric order, so a kind is
	// its own index.
	live := make([]bool, len(c.names)*len(stateKinds)) // [name][kind]
	for _, b := range blocks {
		if i, ok := c.ids[b.Name]; ok && uint(b.Kind) < uint(len(stateKinds)) {
			live[i*len(stateKinds)+int(b.Kind)] = true
		}
	}
	for i, n := range c.names {
		for _, k := range stateKinds {
			v := 0.0
			if live[i*len(stateKinds)+int(k)] {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.activeDesc, prometheus.GaugeValue, v, n, k.String())
		}
	}
}

// childrenOf makes v's child for each label value, in order: the children
// the hooks index without a label lookup.
func childrenOf[T any](v interface{ WithLabelValues(...string) T }, values []string) []T {
	children := make([]T, len(values))
	for i, lv := range values {
		children[i] = v.WithLabelValues(lv)
	}
	return children
}

// kindChildrenOf makes v's same_target and failover children for each
// target, indexed by retrySame and retryFailover.
func kindChildrenOf(v *prometheus.CounterVec, targets []string) [][2]prometheus.Counter {
	children := make([][2]prometheus.Counter, len(targets))
	for t, target := range targets {
		children[t][retrySame] = v.WithLabelValues(target, "same_target")
		children[t][retryFailover] = v.WithLabelValues(target, "failover")
	}
	return children
}

func (c *Collector) vectors() []prometheus.Collector {
	return []prometheus.Collector{
		c.attemptsVec, c.retriesVec, c.hedgesVec, c.lostVec, c.exhaustVec, c.blocksVec, c.ejectVec,
		c.recoverVec, c.probeVec, c.ttfbVec, c.totalVec, c.wait, c.overhead, c.contVec,
	}
}
