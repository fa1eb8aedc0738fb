package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
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
// loopback too. With naive set, the load goes straight to the primary's
// server instead, retried by the naive baseline's rule.
//
// A run lasts as long as its scenario: use Options.Requests for a short
// one. When ctx ends, no new request starts, those in flight are
// cancelled, and the result covers the requests that were sent.
func RunHTTP(ctx context.Context, sc *Scenario, o Options, naive bool) (*Result, error) {
	cfg, err := sc.NewConfig()
	if err != nil {
		return nil, err
	}
	n := o.requests(sc)
	h := &httpRun{
		sc:    sc,
		o:     o,
		naive: naive,
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
	e, err := engine.New(cfg, engine.WithHooks(engine.Hooks{Exhausted: func(r engine.Reason) {
		v, _ := reasons.LoadOrStore(r, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}}))
	if err != nil {
		return nil, err
	}
	h.engine = e
	if t, ok := e.Compiled().Lookup(sc.Workload.Model); ok {
		h.primaryURL = h.upstreamURLs[t] + "/v1/chat/completions"
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

	pol := "reroute"
	if naive {
		pol = "naive"
	}
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

	h.mu.Lock()
	defer h.mu.Unlock()
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
	return h.rec.result(sc, ModeHTTP, pol, o.seed(sc), wall), nil
}

const reasonExhausted = "retry_exhausted"

type httpRun struct {
	sc    *Scenario
	o     Options
	naive bool
	total int64
	stop  chan struct{} // closed at shutdown: hanging upstreams give up
	index map[string]int

	servers      []*http.Server
	serveWG      sync.WaitGroup
	upstreamURLs []string
	gatewayURL   string
	gatewayUp    bool
	primaryURL   string
	engine       *engine.Engine
	proxy        *httpproxy.Handler
	client       *http.Client
	body         []byte

	start time.Time
	base  int64

	issued atomic.Int64
	done   atomic.Int64
	ok     atomic.Int64

	mu  sync.Mutex // guards rec
	rec *recorder
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
// waits for every goroutine. Idle connections are closed from the client
// side first, so that no server waits for them.
func (h *httpRun) shutdown() {
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

// load sends the workload: a closed loop of Concurrency workers, or
// Poisson arrivals at Rate, each request in its own goroutine.
func (h *httpRun) load(ctx context.Context) {
	var wg sync.WaitGroup
	w := h.sc.Workload
	if w.Concurrency > 0 {
		for range min(int64(w.Concurrency), h.total) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil && h.issued.Add(1) <= h.total {
					h.request(ctx)
				}
			}()
		}
		wg.Wait()
		h.issued.Store(min(h.issued.Load(), h.total))
		return
	}
	rng := rand.New(rand.NewPCG(h.o.seed(h.sc), 0x6172726976616c73))
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := int64(0); i < h.total && ctx.Err() == nil; i++ {
		if d := time.Until(next); d > time.Millisecond {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
		}
		h.issued.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.request(ctx)
		}()
		next = next.Add(time.Duration(rng.ExpFloat64() / w.Rate * float64(time.Second)))
	}
	wg.Wait()
}

// request sends one request and records how it ended.
func (h *httpRun) request(ctx context.Context) {
	t0 := time.Now()
	h.mu.Lock()
	h.rec.arrival(int64(t0.Sub(h.start)))
	h.mu.Unlock()
	target, reason := -1, ""
	if h.naive {
		target, reason = h.naiveRequest(ctx)
	} else {
		target, reason = h.send(ctx, h.gatewayURL, true)
	}
	end := time.Now()
	h.mu.Lock()
	if target >= 0 {
		h.rec.success(int64(t0.Sub(h.start)), int64(end.Sub(h.start)), target)
		h.ok.Add(1)
	} else {
		h.rec.failure(int64(t0.Sub(h.start)), int64(end.Sub(h.start)), reason)
	}
	h.mu.Unlock()
	h.done.Add(1)
}

// naiveRequest is the naive baseline over HTTP: the primary, up to three
// times, at once, whatever it answered.
func (h *httpRun) naiveRequest(ctx context.Context) (int, string) {
	t, _ := h.engine.Compiled().Lookup(h.sc.Workload.Model)
	ctx, cancel := context.WithTimeout(ctx, h.sc.Workload.Timeout)
	defer cancel()
	for range naiveMaxAttempts {
		actx, acancel := ctx, context.CancelFunc(func() {})
		if to := h.engine.AttemptTimeout(t); to > 0 {
			actx, acancel = context.WithTimeout(ctx, to)
		}
		served, r := h.send(actx, h.primaryURL, false)
		acancel()
		if served >= 0 {
			return t, ""
		}
		if ctx.Err() != nil {
			return -1, string(engine.ReasonDeadline)
		}
		if r2, ok := passThrough(r); ok {
			return -1, r2
		}
	}
	return -1, string(engine.ReasonMaxAttempts)
}

// passThrough reports an answer the naive client delivers as it is (1xx
// and 3xx are not failures it retries).
func passThrough(reason string) (string, bool) {
	if len(reason) == len("upstream_000") && reason[:9] == "upstream_" && (reason[9] == '1' || reason[9] == '3') {
		return reason, true
	}
	return "", false
}

var doneMarker = []byte("data: [DONE]")

// send posts the request body to url and reads the whole answer. It
// returns the index of the target that served a 2xx answer, or -1 and why
// the request failed.
func (h *httpRun) send(ctx context.Context, url string, gateway bool) (int, string) {
	if gateway {
		// The gateway answers at its own deadline; this one only guards
		// against a gateway that does not.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.sc.Workload.Timeout+5*time.Second)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(h.body))
	if err != nil {
		return -1, "client_error"
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer loadgen")
	resp, err := h.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return -1, string(engine.ReasonDeadline)
		}
		return -1, "transport_error"
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case err != nil && errors.Is(err, context.DeadlineExceeded):
		return -1, string(engine.ReasonDeadline)
	case err != nil:
		return -1, "transport_error"
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		if h.sc.Workload.Stream && !bytes.Contains(body, doneMarker) {
			return -1, "stream_cut"
		}
		if !gateway {
			return 0, ""
		}
		t, ok := h.index[resp.Header.Get("X-Reroute-Target")]
		if !ok {
			return -1, "unknown_target"
		}
		return t, ""
	case gateway && bytes.Contains(body, []byte(`"retry_exhausted"`)):
		return -1, reasonExhausted
	case gateway && bytes.Contains(body, []byte(`"deadline_exceeded"`)):
		return -1, string(engine.ReasonDeadline)
	}
	return -1, h.rec.passThrough(resp.StatusCode)
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

// fake is the loopback upstream of one target: it acts out the target's
// phases against the wall-clock time since the run started.
type fake struct {
	u      *Upstream
	t      int
	run    *httpRun
	stream bool
	busy   atomic.Int64 // attempts in progress, for Upstream.Capacity
}

// globalRand is math/rand/v2's goroutine-safe global source, for the
// fakes' draws: real time is not reproducible anyway.
type globalRand struct{}

func (globalRand) Uint64() uint64 { return rand.Uint64() }

var fakeRand = rand.New(globalRand{})

var (
	fakeOK     = []byte(`{"id":"chatcmpl-loadgen","object":"chat.completion","created":1700000000,"model":"loadgen","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, load generator."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}`)
	fakeChunk1 = []byte("data: {\"id\":\"chatcmpl-loadgen\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"loadgen\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hello,\"},\"finish_reason\":null}]}\n\n")
	fakeChunk2 = []byte("data: {\"id\":\"chatcmpl-loadgen\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"loadgen\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" load generator.\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
)

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	start := time.Now()
	off := start.Sub(f.run.start)
	f.run.mu.Lock()
	f.run.rec.attempt(int64(off), f.t)
	f.run.mu.Unlock()
	n := f.busy.Add(1)
	defer f.busy.Add(-1)
	a := overloaded
	if c := f.u.Capacity; c == 0 || n <= int64(c) {
		a = f.u.answer(off, fakeRand)
	}
	if a.hang {
		select {
		case <-r.Context().Done():
		case <-f.run.stop:
		}
		return
	}
	if !f.sleepUntil(r, start.Add(a.ttfb)) {
		return
	}
	if a.reset {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // an RST, not a FIN
				}
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	hd := w.Header()
	for k, v := range a.header {
		hd[k] = v
	}
	if a.status >= 300 {
		msg := []byte(`{"error":{"message":"loadgen: simulated ` + strconv.Itoa(a.status) + ` ` + http.StatusText(a.status) + `","type":"loadgen_simulated","param":null,"code":null}}`)
		hd.Set("Content-Type", "application/json")
		hd.Set("Content-Length", strconv.Itoa(len(msg)))
		w.WriteHeader(a.status)
		_, _ = w.Write(msg)
		return
	}
	fl, _ := w.(http.Flusher)
	if f.stream {
		hd.Set("Content-Type", "text/event-stream")
		hd.Set("Cache-Control", "no-cache")
		w.WriteHeader(a.status)
		_, _ = w.Write(fakeChunk1)
		if fl != nil {
			fl.Flush()
		}
		if !f.sleepUntil(r, start.Add(a.total)) {
			return
		}
		_, _ = w.Write(fakeChunk2)
		return
	}
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(fakeOK)))
	w.WriteHeader(a.status)
	if a.total > a.ttfb {
		if fl != nil {
			fl.Flush()
		}
		if !f.sleepUntil(r, start.Add(a.total)) {
			return
		}
	}
	_, _ = w.Write(fakeOK)
}

// sleepUntil waits until t, or until the client goes away or the run
// stops (false).
func (f *fake) sleepUntil(r *http.Request, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-r.Context().Done():
	case <-f.run.stop:
	}
	return false
}
