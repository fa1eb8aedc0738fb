package main

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/engine/httpproxy"
	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
	"github.com/reroute-go/reroute/prom"
	"github.com/reroute-go/reroute/redishealth"
)

// The operational endpoints (docs/gateway.md#operational-endpoints).
const (
	pathMetrics = "/metrics"
	pathHealthz = "/healthz"
	pathReadyz  = "/readyz"
	pathBlocks  = "/debug/reroute/blocks"
)

// stateTimeout bounds how long /readyz and /debug/reroute/blocks wait for
// the health actor, which answers in microseconds while it runs.
const stateTimeout = time.Second

// admin serves the operational endpoints: on the main listener beside the
// proxy (handler), or on a listener of their own (listen) when the
// -admin-addr flag names one. It is safe for concurrent use.
type admin struct {
	ctx     context.Context // run's: done when shutdown starts, after which /readyz says 503
	addr    string          // -admin-addr; "" serves the endpoints on the main listener
	log     *zap.Logger
	col     *prom.Collector
	metrics http.Handler
	reg     *prometheus.Registry
	eng     atomic.Pointer[engine.Engine]      // nil until attach: /readyz says 503
	proxy   atomic.Pointer[httpproxy.Handler]  // its continuation rejections are listed with the blocks; nil: none
	shared  atomic.Pointer[redishealth.Sharer] // nil without engine.shared_health

	srv    *http.Server // the admin listener's server; nil without -admin-addr
	served chan error
}

// newAdmin makes the endpoints for cfg (finalized by Load) with a private
// registry: the engine's collector, and the Go runtime's and the process's
// collectors. Nothing is registered on a global registry.
func newAdmin(ctx context.Context, cfg *policy.Config, addr string, log *zap.Logger) *admin {
	a := &admin{ctx: ctx, addr: addr, log: log, col: prom.New(cfg.Compiled())}
	reg := prometheus.NewRegistry()
	a.reg = reg
	reg.MustRegister(a.col, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: zap.NewStdLog(log.Named("metrics")),
		Registry: reg, // counts its own errors: promhttp_metric_handler_errors_total
	})
	return a
}

// hooks is the engine option that feeds the collector.
func (a *admin) hooks() engine.Option { return engine.WithHooks(a.col.Hooks()) }

// attach hands the endpoints the engine built from the same configuration.
func (a *admin) attach(e *engine.Engine) {
	// The engine was built from the configuration the collector was made
	// for, so Attach cannot refuse it.
	_ = a.col.Attach(e)
	a.eng.Store(e)
}

// handler returns what the main listener serves: the proxy h, with the
// operational endpoints beside it unless they have a listener of their
// own. Every other path goes to h untouched (no ServeMux in between to
// clean or redirect paths the proxy answers itself).
func (a *admin) handler(h http.Handler) http.Handler {
	if a.addr != "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isAdminPath(r.URL.Path) {
			a.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func isAdminPath(p string) bool {
	switch p {
	case pathMetrics, pathHealthz, pathReadyz, pathBlocks, pathShared:
		return true
	}
	return false
}

// listen starts the admin listener when -admin-addr is set; close stops
// it. The endpoints are then served there only.
func (a *admin) listen(headerTimeout time.Duration) error {
	if a.addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a.addr)
	if err != nil {
		a.log.Error("cannot listen", zap.String("admin_addr", a.addr), zap.Error(err))
		return err
	}
	a.srv = &http.Server{Handler: a, ReadHeaderTimeout: headerTimeout, ErrorLog: zap.NewStdLog(a.log.Named("admin"))}
	a.served = make(chan error, 1)
	go func() { a.served <- a.srv.Serve(ln) }()
	a.log.Info("admin endpoints listening", zap.String("admin_addr", ln.Addr().String()),
		zap.Strings("paths", []string{pathMetrics, pathHealthz, pathReadyz, pathBlocks, pathShared}))
	return nil
}

// close stops the admin listener, if any, and waits for it. A scrape in
// progress gets a second to finish.
func (a *admin) close() {
	if a.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close()
	}
	<-a.served
}

// ServeHTTP serves the operational endpoints; any other path is 404.
func (a *admin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !isAdminPath(r.URL.Path) {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch r.URL.Path {
	case pathMetrics:
		a.metrics.ServeHTTP(w, r)
	case pathHealthz:
		text(w, http.StatusOK, "ok\n")
	case pathReadyz:
		a.readyz(w, r)
	case pathBlocks:
		a.blocks(w, r)
	case pathShared:
		a.sharedStats(w)
	}
}

// readyz answers 200 when the configuration is loaded and the engine runs:
// it is built, shutdown has not started, and its health actor answers.
func (a *admin) readyz(w http.ResponseWriter, r *http.Request) {
	e := a.eng.Load()
	switch {
	case e == nil:
		text(w, http.StatusServiceUnavailable, "not ready: the engine is not built yet\n")
		return
	case a.ctx.Err() != nil:
		text(w, http.StatusServiceUnavailable, "not ready: shutting down\n")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), stateTimeout)
	defer cancel()
	if err := e.Actor().Sync(ctx); err != nil {
		if errors.Is(err, health.ErrStopped) {
			text(w, http.StatusServiceUnavailable, "not ready: the engine is closed\n")
			return
		}
		text(w, http.StatusServiceUnavailable, "not ready: the health actor did not answer: "+err.Error()+"\n")
		return
	}
	text(w, http.StatusOK, "ready\n")
}

// blockJSON is one entry of /debug/reroute/blocks.
type blockJSON struct {
	ID               string  `json:"id"`                // a target id or a provider name
	Kind             string  `json:"kind"`              // retry_after, latency, ejected or continuation_rejected
	RemainingSeconds float64 `json:"remaining_seconds"` // until it ends, to the millisecond
}

// attachProxy hands the endpoints the proxy whose continuation
// rejections /debug/reroute/blocks lists.
func (a *admin) attachProxy(h *httpproxy.Handler) { a.proxy.Store(h) }

// blocks lists the shared blocks and ejections live now, as the health
// actor has them once every report accepted so far is applied, and the
// targets not asked to continue a stream after rejecting a continuation
// (kind continuation_rejected, docs/gateway.md#continuing-a-cut-stream).
func (a *admin) blocks(w http.ResponseWriter, r *http.Request) {
	e := a.eng.Load()
	if e == nil {
		jsonError(w, http.StatusServiceUnavailable, "the engine is not built yet")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), stateTimeout)
	defer cancel()
	bs, err := e.Actor().Blocks(ctx)
	if err != nil {
		jsonError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	now := time.Now().UnixNano() // the gateway's engine runs on the wall clock
	out := make([]blockJSON, 0, len(bs))
	for _, b := range bs {
		rem := math.Round(float64(b.Until-now)/1e6) / 1e3
		out = append(out, blockJSON{ID: b.Name, Kind: b.Kind.String(), RemainingSeconds: max(rem, 0)})
	}
	if h := a.proxy.Load(); h != nil {
		for _, c := range h.ContinuationRejections() {
			rem := math.Round(float64(c.Until.UnixNano()-now)/1e6) / 1e3
			out = append(out, blockJSON{ID: c.Target, Kind: "continuation_rejected", RemainingSeconds: max(rem, 0)})
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(out)
}

func text(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func jsonError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
