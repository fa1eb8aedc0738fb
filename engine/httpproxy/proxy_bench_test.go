package httpproxy

import (
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
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		_, _ = w.Write(answer)
	}))
	defer up.Close()
	tr := &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64}
	defer tr.CloseIdleConnections()

	cfg, _, err := policy.Parse([]byte(`
model_providers:
  - model: openai/gpt-4o
    base_url: ` + up.URL + `/v1
    access_key: sk-bench
    retry_policy: {on_status_codes: [{codes: [429, 503], strategy: different_provider, max_attempts: 2}]}
  - model: anthropic/claude-3-5-sonnet
    base_url: ` + up.URL + `/v1
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
	defer e.Close()
	h, err := New(e, WithTransport(tr))
	if err != nil {
		b.Fatal(err)
	}
	front := httptest.NewServer(h)
	defer front.Close()

	target, _ := url.Parse(up.URL)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set("Authorization", "Bearer sk-bench")
		},
		Transport: tr,
	}
	rpFront := httptest.NewServer(rp)
	defer rpFront.Close()

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
			send(b, front.URL+Path)
		}
	})
	b.Run("reverseproxy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			send(b, rpFront.URL+Path)
		}
	})
	// The two rows above run one after the other, and a shared machine's
	// load drifts between them. This row alternates the two requests and
	// reports the ratio of their summed times (its ns/op is a pair's).
	b.Run("paired", func(b *testing.B) {
		var re, rp time.Duration
		for b.Loop() {
			t0 := time.Now()
			send(b, front.URL+Path)
			t1 := time.Now()
			send(b, rpFront.URL+Path)
			re, rp = re+t1.Sub(t0), rp+time.Since(t1)
		}
		b.ReportMetric(float64(re)/float64(rp), "x-reverseproxy")
	})
}
