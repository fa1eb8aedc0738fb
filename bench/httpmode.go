package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/engine/httpproxy"
)

// RunHTTP runs sc over real HTTP in real time: one loopback server per
// target acts out its phases against the wall-clock time since the start,
// the configuration's base_url of each target is pointed at its server,
// and the load goes through the HTTP adapter (httpproxy) served on
// loopback too. With a baseline's name instead of BaselineNone, the load
// goes straight to the upstream servers instead, by that baseline's rule
// (baselineChain): the primary's, then, for naive-failover, its fallbacks'
// in order.
//
// A run lasts as long as its scenario: use Options.Requests for a short
// one. When ctx ends, no new request starts, those in flight are
// cancelled, and the result covers the requests that were sent and every
// attempt that reached an upstream, the gateway's last failovers included.
func RunHTTP(ctx context.Context, sc *Scenario, o Options, baseline string) (*Result, error) {
	if err := checkBaseline(baseline); err != nil {
		return nil, err
	}
	cfg, err := sc.NewConfig()
	if err != nil {
		return nil, err
	}
	n := o.requests(sc)
	h := &httpRun{
		sc:    sc,
		o:     o,
		naive: naiveBaseline(baseline),
		total: int64(n),
		stop:  make(chan struct{}),
		rec:   newRecorder(sc.Targets, bucketWidth(sc.Estimate(n))),
		index: map[string]int{},
		// Set before any goroutine starts: the servers read it.
		start: time.Now(),
	}
	for i, t := range sc.Targets {
		h.index[t] = i
	}
	defer h.shutdown()

	// The upstreams.
	for i := range sc.Upstreams {
		f := &fake{u: &sc.Upstreams[i], t: i, run: h, stream: sc.Workload.Stream}
		srv, url, err := h.serve(f)
		if err != nil {
			return nil, err
		}
		h.servers = append(h.servers, srv)
		h.upstreamURLs = append(h.upstreamURLs, url)
		cfg.ModelProviders[i].BaseURL = url + "/v1"
	}

	// The gateway: the engine behind the HTTP adapter, with the request
	// deadline a gateway host would set.
	var reasons sync.Map // engine.Reason → *atomic.Int64
	opts := []engine.Option{engine.WithHooks(engine.Hooks{Exhausted: func(r engine.Reason) {
		v, _ := reasons.LoadOrStore(r, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}, Hedge: func(engine.HedgeEvent) { h.hedges.Add(1) }})}
	if baseline == BaselineNoHedge {
		opts = append(opts, engine.WithoutHedging())
	}
	e, err := engine.New(cfg, opts...)
	if err != nil {
		return nil, err
	}
	h.engine = e
	if t, ok := e.Compiled().Lookup(sc.Workload.Model); ok {
		for _, c := range baselineChain(e.Compiled(), t, baseline) {
			h.chain = append(h.chain, c)
			h.chainURLs = append(h.chainURLs, h.upstreamURLs[c]+"/v1/chat/completions")
		}
	}
	proxy, err := httpproxy.New(e)
	if err != nil {
		return nil, err
	}
	h.proxy = proxy
	timeout := sc.Workload.Timeout
	gw, gwURL, err := h.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		proxy.ServeHTTP(w, r.WithContext(ctx))
	}))
	if err != nil {
		return nil, err
	}
	h.servers = append(h.servers, gw)
	h.gatewayUp = true
	h.gatewayURL = gwURL + httpproxy.Path

	conc := sc.Workload.Concurrency
	if conc == 0 {
		conc = 256
	}
	h.client = &http.Client{Transport: &http.Transport{
		MaxIdleConns:        conc + 16,
		MaxIdleConnsPerHost: conc + 16,
		DisableCompression:  true,
		IdleConnTimeout:     30 * time.Second,
	}}
	h.body = []byte(`{"model":` + strconv.Quote(sc.Workload.Model) + `,"messages":[{"role":"user","content":"Say hello to the load generator."}],"stream":` + strconv.FormatBool(sc.Workload.Stream) + `}`)

	pol := policyName(baseline)
	h.base = h.start.UnixNano()
	t0 := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var bg sync.WaitGroup
	bg.Add(1)
	go func() {
		defer bg.Done()
		h.monitor(ctx, pol)
	}()
	h.load(ctx)
	wall := time.Since(t0)
	cancel()
	bg.Wait()
	if o.Progress != nil {
		o.Progress(h.progress(pol, true))
	}

	// The result is taken only once everything has stopped. When the load
	// returns, the gateway may still be failing over requests whose client
	// has gone (a cancelled run), and an attempt it sends then is recorded
	// by its upstream during the shutdown: taken before, the result's
	// totals would miss attempts that its series, which is the recorder's,
	// goes on to count.
	h.shutdown()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sealed = true
	// The adapter renders every exhaustion alike; the engine's hook knows
	// the reason.
	if k := h.rec.reasons[reasonExhausted]; k > 0 {
		delete(h.rec.reasons, reasonExhausted)
		reasons.Range(func(k, v any) bool {
			h.rec.reasons[string(k.(engine.Reason))] += v.(*atomic.Int64).Load()
			return true
		})
	}
	h.rec.lastEnd = max(h.rec.lastEnd, int64(wall))
	h.rec.hedges = h.hedges.Load()
	return h.rec.result(sc, ModeHTTP, pol, o.seed(sc), wall), nil
}

const reasonExhausted = "retry_exhausted"

type httpRun struct {
	hedges atomic.Int64 // hedges the gateway started (Hooks.Hedge)
	sc     *Scenario
	o      Options
	naive  bool // a baseline's client runs instead of the gateway
	total  int64
	stop   chan struct{} // closed at shutdown: hanging upstreams give up
	index  map[string]int

	servers      []*http.Server
	serveWG      sync.WaitGroup
	upstreamURLs []string
	gatewayURL   string
	gatewayUp    bool
	chain        []int    // the baseline's targets, in order (baselineChain)
	chainURLs    []string // their upstream servers' completion URLs
	engine       *engine.Engine
	proxy        *httpproxy.Handler
	client       *http.Client
	body         []byte

	start time.Time
	base  int64

	issued atomic.Int64
	done   atomic.Int64
	ok     atomic.Int64

	mu  sync.Mutex // guards rec and sealed
	rec *recorder
	// sealed is set when the result has been taken from rec, which then
	// records nothing more: an upstream handler that outlives the shutdown
	// (a server closed at its deadline) must not change the result's
	// series.
	sealed bool

	shutdownOnce sync.Once
}

// serve starts an HTTP server for h on a loopback port.
func (h *httpRun) serve(handler http.Handler) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", fmt.Errorf("loadgen: listen on loopback: %w", err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	h.serveWG.Add(1)
	go func() {
		defer h.serveWG.Done()
		_ = srv.Serve(ln)
	}()
	return srv, "http://" + ln.Addr().String(), nil
}

// shutdown stops everything RunHTTP started, in dependency order, and
// waits for every goroutine; http.Server.Shutdown waits for the handlers
// too, so every attempt that reached an upstream has been recorded when it
// returns (unless a server had to be closed at the deadline). Idle
// connections are closed from the client side first, so that no server
// waits for them. Only the first call does anything: RunHTTP calls it
// before taking the result and defers it for its early returns.
func (h *httpRun) shutdown() {
	h.shutdownOnce.Do(h.stopAll)
}

func (h *httpRun) stopAll() {
	close(h.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if h.client != nil {
		h.client.CloseIdleConnections()
	}
	stop := func(srv *http.Server) {
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
	}
	n := len(h.servers)
	if h.gatewayUp {
		stop(h.servers[n-1]) // the gateway is the last one started
		n--
	}
	if h.engine != nil {
		h.engine.Close()
	}
	if h.proxy != nil {
		h.proxy.CloseIdleConnections()
	}
	for _, srv := range h.servers[:n] {
		stop(srv)
	}
	h.serveWG.Wait()
}

func (h *httpRun) progress(pol string, final bool) Progress {
	return Progress{Policy: pol, Elapsed: time.Since(h.start), Done: h.done.Load(), Total: h.total,
		Succeeded: h.ok.Load(), Scenario: time.Since(h.start), Final: final}
}

// monitor reports progress and samples the health actor's blocks until
// ctx ends.
func (h *httpRun) monitor(ctx context.Context, pol string) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := time.Now()
	every := h.o.every()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if !h.naive {
				if blocks, err := h.engine.Actor().Blocks(ctx); err == nil {
					h.mu.Lock()
					h.rec.ser.blocks(int64(now.Sub(h.start)), blocks, h.base)
					h.mu.Unlock()
				}
			}
			if h.o.Progress != nil && now.Sub(last) >= every {
				last = now
				h.o.Progress(h.progress(pol, false))
			}
		}
	}
}
