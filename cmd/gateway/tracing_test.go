package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

func TestTracingWanted(t *testing.T) {
	for _, tc := range []struct {
		env      map[string]string
		on       bool
		reasonIn string
	}{
		{env: nil},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "zipkin"}, reasonIn: "OTEL_TRACES_EXPORTER=zipkin"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, reasonIn: "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}},
	} {
		on, why := tracingWanted(func(k string) string { return tc.env[k] })
		if on != tc.on || (tc.reasonIn == "") != (why == "") || !strings.Contains(why, tc.reasonIn) {
			t.Errorf("%v: on %v, reason %q; want %v, reason with %q", tc.env, on, why, tc.on, tc.reasonIn)
		}
	}
}

// collector is an OTLP/HTTP endpoint on loopback: it decodes every export
// and keeps its spans.
type collector struct {
	srv     *httptest.Server
	mu      sync.Mutex
	exports int
	spans   []string // name trace-id span-id parent-id, per span
	service []string // service.name of each resource
}

func newCollector(t *testing.T) *collector {
	c := &collector{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
			http.NotFound(w, r)
			return
		}
		b, err := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(b, &req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		c.exports++
		for _, rs := range req.ResourceSpans {
			for _, kv := range rs.Resource.GetAttributes() {
				if kv.Key == "service.name" {
					c.service = append(c.service, kv.Value.GetStringValue())
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					c.spans = append(c.spans, s.Name+" "+hexOf(s.TraceId)+" "+hexOf(s.SpanId)+" "+hexOf(s.ParentSpanId))
				}
			}
		}
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Write(out)
	}))
	t.Cleanup(c.srv.Close)
	return c
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, x := range b {
		out = append(out, digits[x>>4], digits[x&15])
	}
	return string(out)
}

// With OTEL_EXPORTER_OTLP_ENDPOINT set, the gateway exports a request's
// spans to it, by the time it has shut down, and the upstream hears the
// attempt span's trace context.
func TestTracingExport(t *testing.T) {
	col := newCollector(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", col.srv.URL)
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME",
		"OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		t.Setenv(k, "")
	}
	traceparent := make(chan string, 1)
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		traceparent <- r.Header.Get("Traceparent")
		answer("gpt-4o")(w, r)
	})
	url, stop, logs := gateway(t, `
model_providers:
  - model: openai/gpt-4o
    base_url: `+up.URL+`/v1
    access_key: sk-test
`)
	if resp, body := post(t, url, `{"model":"openai/gpt-4o","messages":[]}`); resp.StatusCode != 200 {
		t.Fatalf("status %d, body %s", resp.StatusCode, body)
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, logs)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if col.exports < 1 || len(col.spans) != 2 || !slices.Equal(slices.Compact(col.service), []string{serviceName}) {
		t.Fatalf("%d exports, spans %q, services %q\n%s", col.exports, col.spans, col.service, logs)
	}
	spans := slices.Clone(col.spans)
	slices.Sort(spans) // reroute.attempt before reroute.request
	att, req := strings.Fields(spans[0]), strings.Fields(spans[1])
	if att[0] != "reroute.attempt" || req[0] != "reroute.request" || len(req) != 3 || att[1] != req[1] || att[3] != req[2] {
		t.Errorf("spans %q: want an attempt span whose parent is the request span", spans)
	}
	if got, want := <-traceparent, "00-"+att[1]+"-"+att[2]+"-01"; got != want {
		t.Errorf("upstream got traceparent %q, want %q", got, want)
	}
	if !strings.Contains(logs.String(), "tracing on") {
		t.Errorf("no tracing-on line in the log:\n%s", logs)
	}
}
