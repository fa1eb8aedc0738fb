package httpproxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
)

// BenchmarkProxyOverhead sends the same non-streaming request through the
// handler and through httputil.ReverseProxy, in the same run, to a loopback
// upstream that answers at once. Client, proxies and upstream connections
// share one keep-alive http.Transport. The goal is reroute ≤ 1.2 × the
// ReverseProxy's ns/op; the paired row measures that ratio
// (x-reverseproxy) with the two requests alternating.
func BenchmarkProxyOverhead(b *testing.B) {
	answer := []byte(completion("gpt-4o-2024-08-06"))
	front, rpFront, tr := benchProxies(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		_, _ = w.Write(answer)
	}))
	client := &http.Client{Transport: tr}
	body := []byte(chatBody("gpt-4o"))
	send := func(b *testing.B, u string) {
		req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer sk-client")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != int64(len(answer)) {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
	}
	b.Run("reroute", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			send(b, front+Path)
		}
	})
	b.Run("reverseproxy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			send(b, rpFront+Path)
		}
	})
	// The two rows above run one after the other, and a shared machine's
	// load drifts between them. This row alternates the two requests and
	// reports the ratio of their summed times (its ns/op is a pair's).
	b.Run("paired", func(b *testing.B) {
		var re, rp time.Duration
		for b.Loop() {
			t0 := time.Now()
			send(b, front+Path)
			t1 := time.Now()
			send(b, rpFront+Path)
			re, rp = re+t1.Sub(t0), rp+time.Since(t1)
		}
		b.ReportMetric(float64(re)/float64(rp), "x-reverseproxy")
	})
}

// benchProxies starts a loopback upstream serving up, the handler in front
// of it and an httputil.ReverseProxy in front of it, and returns the two
// fronts' URLs and the keep-alive transport that client, proxies and
// upstream connections share. Everything is closed at the benchmark's end.
func benchProxies(b *testing.B, up http.Handler) (front, rpFront string, tr *http.Transport) {
	b.Helper()
	upSrv := httptest.NewServer(up)
	b.Cleanup(upSrv.Close)
	tr = &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)

	cfg, _, err := policy.Parse([]byte(`
model_providers:
  - model: openai/gpt-4o
    base_url: ` + upSrv.URL + `/v1
    access_key: sk-bench
    retry_policy: {on_status_codes: [{codes: [429, 503], strategy: different_provider, max_attempts: 2}]}
  - model: anthropic/claude-3-5-sonnet
    base_url: ` + upSrv.URL + `/v1
    access_key: sk-bench-2
    provider_interface: anthropic
`))
	if err != nil {
		b.Fatal(err)
	}
	e, err := engine.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	h, err := New(e, WithTransport(tr))
	if err != nil {
		b.Fatal(err)
	}
	fs := httptest.NewServer(h)
	b.Cleanup(fs.Close)

	target, _ := url.Parse(upSrv.URL)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set("Authorization", "Bearer sk-bench")
		},
		Transport: tr,
	}
	rs := httptest.NewServer(rp)
	b.Cleanup(rs.Close)
	return fs.URL, rs.URL, tr
}

// BenchmarkStreamRelay relays a 200-event chat completion stream (198
// content chunks, the finish_reason chunk, [DONE]) from a loopback
// upstream through the handler and through httputil.ReverseProxy, in the
// same run. "burst": the upstream writes the whole stream at once, so the
// relay's own per-event work (parsing, bookkeeping) dominates; "flushed":
// the upstream flushes every event, as a provider sending tokens does, so
// the syscalls of one write and one flush per event dominate. ns/event is
// ns/op divided by the 200 events.
func BenchmarkStreamRelay(b *testing.B) {
	const events = 200
	evs := make([][]byte, 0, events)
	evs = append(evs, []byte(`data: {"id":"chatcmpl-9zX1","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}`+"\n\n"))
	for len(evs) < events-2 {
		evs = append(evs, []byte(chunk("gpt-4o-2024-08-06", " token")))
	}
	evs = append(evs,
		[]byte(`data: {"id":"chatcmpl-9zX1","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`+"\n\n"),
		[]byte(done))
	whole := bytes.Join(evs, nil)
	for _, mode := range []string{"burst", "flushed"} {
		front, rpFront, tr := benchProxies(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			if mode == "burst" {
				_, _ = w.Write(whole)
				return
			}
			fl := w.(http.Flusher)
			for _, ev := range evs {
				_, _ = w.Write(ev)
				fl.Flush()
			}
		}))
		client := &http.Client{Transport: tr}
		body := []byte(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Say hello"}]}`)
		send := func(b *testing.B, u string) {
			req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || n != int64(len(whole)) {
				b.Fatalf("status %d, %d bytes, want %d", resp.StatusCode, n, len(whole))
			}
		}
		for _, p := range []struct{ name, url string }{{"reroute", front + Path}, {"reverseproxy", rpFront + Path}} {
			b.Run(mode+"/"+p.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					send(b, p.url)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/events, "ns/event")
			})
		}
	}
}

// BenchmarkStreamEvent is the relay's own work per event, without sockets:
// reading one chunk of an in-memory stream with the SSE reader ("read"),
// that plus following its choices' finish_reasons, as the relay does for
// every chunk ("read+ends"), and that plus keeping the delivered text, as
// it does for a stream that may be continued ("read+ends+continuable").
func BenchmarkStreamEvent(b *testing.B) {
	ev := []byte(chunk("gpt-4o-2024-08-06", " token"))
	stream := bytes.Repeat(ev, 256)
	for _, name := range []string{"read", "read+ends", "read+ends+continuable"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(ev)))
			src := bytes.NewReader(stream)
			r := &sseReader{br: bufio.NewReaderSize(src, 8<<10)}
			var c choiceEnds
			var cont continuation
			for b.Loop() {
				_, _, data, err := r.next()
				if err == io.EOF {
					src.Reset(stream)
					r.br.Reset(src)
					cont.text = cont.text[:0]
					_, _, data, err = r.next()
				}
				if err != nil {
					b.Fatal(err)
				}
				if name != "read" {
					c.observe(data)
				}
				if name == "read+ends+continuable" {
					cont.observe(data)
					if cont.stop != "" {
						b.Fatalf("stopped: %s", cont.stop)
					}
				}
			}
		})
	}
}
