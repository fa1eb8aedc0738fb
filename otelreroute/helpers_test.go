package otelreroute_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/engine/httpproxy"
	"github.com/reroute-go/reroute/otelreroute"
	"github.com/reroute-go/reroute/policy"
)

// stepClock is a clock whose every reading is one millisecond after the
// previous one, from t0: the tracer reads it twice per span, so a test
// knows every span's start and end, and every wait, exactly.
type stepClock struct {
	clock.Clock // only Now is used
	mu          sync.Mutex
	n           int
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	return t0.Add(time.Duration(c.n-1) * time.Millisecond)
}

// at is the time of the clock's n-th reading, from 1.
func at(n int) time.Time { return t0.Add(time.Duration(n-1) * time.Millisecond) }

// upstream is a fake provider on a loopback socket that records the
// headers of every request and answers with its script (the last entry
// repeats).
type upstream struct {
	srv    *httptest.Server
	mu     sync.Mutex
	script []func(w http.ResponseWriter)
	hdrs   []http.Header
}

func newUpstream(t *testing.T, script ...func(w http.ResponseWriter)) *upstream {
	u := &upstream{script: script}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		u.mu.Lock()
		n := len(u.hdrs)
		u.hdrs = append(u.hdrs, r.Header.Clone())
		s := u.script[min(n, len(u.script)-1)]
		u.mu.Unlock()
		s(w)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) headers() []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.hdrs)
}

func answer(status int, body string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

func completion(model string) string {
	return `{"id":"chatcmpl-1","object":"chat.completion","model":"` + model + `","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}]}`
}

// gateway is the HTTP adapter on an engine, traced by a Tracer with an
// SDK provider that exports synchronously to memory, behind a front
// server on loopback.
type gateway struct {
	t      *testing.T
	e      *engine.Engine
	spans  *tracetest.InMemoryExporter
	front  *httptest.Server
	served chan struct{} // one value per request the handler has finished, end of its span included
}

// newEngine builds an engine for yaml and closes it at the end of the
// test.
func newEngine(t *testing.T, yaml string) *engine.Engine {
	t.Helper()
	cfg, _, err := policy.Parse([]byte(strings.TrimSpace(yaml)))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	e, err := engine.New(cfg)
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// memoryProvider is an SDK provider that exports synchronously to the
// returned exporter, shut down at the end of the test.
func memoryProvider(t *testing.T, opts ...sdktrace.TracerProviderOption) (*tracetest.InMemoryExporter, *sdktrace.TracerProvider) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(append([]sdktrace.TracerProviderOption{sdktrace.WithSyncer(spans)}, opts...)...)
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return spans, tp
}

func newGateway(t *testing.T, yaml string) *gateway {
	t.Helper()
	e := newEngine(t, yaml)
	g := &gateway{t: t, e: e, spans: tracetest.NewInMemoryExporter(), served: make(chan struct{}, 16)}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(g.spans), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	tr := otelreroute.New(e.Compiled(),
		otelreroute.WithTracerProvider(tp),
		otelreroute.WithPropagator(propagation.TraceContext{}),
		otelreroute.WithClock(&stepClock{}),
		otelreroute.WithOperation("chat"))
	h, err := httpproxy.New(e,
		httpproxy.WithRequestTracer(tr.StartRequest),
		httpproxy.WithCallWrapper(tr.WrapCall),
		httpproxy.WithHeaderInjector(tr.Inject))
	if err != nil {
		t.Fatalf("httpproxy.New: %v", err)
	}
	traced := tr.Extract(h)
	g.front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		traced.ServeHTTP(w, r)
		g.served <- struct{}{}
	}))
	t.Cleanup(func() {
		g.front.Close()
		h.CloseIdleConnections()
		e.Close()
		_ = tp.Shutdown(context.Background())
	})
	return g
}

// post sends body with the header pairs and returns the status and body
// once the handler has returned.
func (g *gateway) post(body string, header ...string) (int, string) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.front.URL+httpproxy.Path, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := g.front.Client().Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		g.t.Fatal(err)
	}
	select {
	case <-g.served:
	case <-ctx.Done():
		g.t.Fatal("the handler did not return")
	}
	return resp.StatusCode, string(b)
}

// attrs renders attributes as sorted key=value lines, for exact
// comparison with readable differences.
func attrs(kvs []attribute.KeyValue) []string {
	out := make([]string, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, fmt.Sprintf("%s=%s", kv.Key, kv.Value.String()))
	}
	slices.Sort(out)
	return out
}
