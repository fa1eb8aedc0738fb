package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/engine/httpproxy"
	"github.com/reroute-go/reroute/policy"
)

// scripted is an upstream that answers its statuses in order, repeating
// the last; a 429 carries Retry-After: 30.
type scripted struct {
	mu       sync.Mutex
	statuses []int
	n        int
	model    string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	st := s.statuses[min(s.n, len(s.statuses)-1)]
	s.n++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch st {
	case 200:
		answer(s.model)(w, r)
		return
	case 429:
		w.Header().Set("Retry-After", "30")
	}
	w.WriteHeader(st)
	fmt.Fprintf(w, `{"error":{"message":"status %d","type":"server_error","param":null,"code":null}}`, st)
}

func (s *scripted) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// get fetches url over a fresh connection and returns the response and
// its body.
func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// samples parses a scrape into its samples, keyed by name and labels as
// the exposition format writes them ("reroute_attempts_total{class=...}").
func samples(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("scrape line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

const metricsConfig = `
model_providers:
  - model: openai/gpt-4o
    base_url: %s/v1
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      on_status_codes:
        - {codes: [429], strategy: different_provider, max_attempts: 2}
        - {codes: [503], strategy: same_model, max_attempts: 2}
      default_strategy: different_provider
      default_max_attempts: 2
      backoff: {apply_to: same_model, base_ms: 20, max_ms: 40, jitter: none}
  - model: anthropic/claude-3-5-sonnet
    base_url: %s/v1
`

// scrapeFamilies is a Gatherer of what url serves: the scrape parsed
// back into metric families, so that the linter sees exactly the bytes a
// Prometheus server would.
func scrapeFamilies(t *testing.T, url string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		_, body := get(t, url)
		parser := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := parser.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		out := make([]*dto.MetricFamily, 0, len(mfs))
		for _, mf := range mfs {
			out = append(out, mf)
		}
		return out, nil
	})
}

// Over real HTTP, against loopback upstreams: two successes, a 503 retried
// once on the same target after a 20 ms backoff and then exhausted, and a
// 429 with Retry-After that fails over. The scrape of /metrics has exactly
// those counts, and it passes the Prometheus linter.
func TestGatewayMetrics(t *testing.T) {
	primary := &scripted{model: "gpt-4o", statuses: []int{200, 200, 503, 503, 429}}
	secondary := &scripted{model: "claude-3-5-sonnet", statuses: []int{200}}
	p, s := upstream(t, primary.ServeHTTP), upstream(t, secondary.ServeHTTP)
	url, _, _ := gateway(t, fmt.Sprintf(metricsConfig, p.URL, s.URL))
	for i, want := range []struct {
		status int
		target string
	}{
		{200, "openai/gpt-4o"},
		{200, "openai/gpt-4o"},
		{503, ""}, // exhausted: the last attempt's status
		{200, "anthropic/claude-3-5-sonnet"},
	} {
		resp, body := post(t, url, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != want.status || resp.Header.Get("X-Reroute-Target") != want.target {
			t.Fatalf("request %d: status %d, target %q, want %d %q: %s", i+1, resp.StatusCode, resp.Header.Get("X-Reroute-Target"), want.status, want.target, body)
		}
	}
	if primary.calls() != 5 || secondary.calls() != 1 {
		t.Fatalf("upstream calls: primary %d, secondary %d; want 5 and 1", primary.calls(), secondary.calls())
	}

	resp, body := get(t, url+"/metrics")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	got := samples(t, body)
	const gpt, claude = `target="openai/gpt-4o"`, `target="anthropic/claude-3-5-sonnet"`
	for key, want := range map[string]float64{
		`reroute_attempts_total{class="success",` + gpt + `}`:           2,
		`reroute_attempts_total{class="http_error",` + gpt + `}`:        3,
		`reroute_attempts_total{class="timeout",` + gpt + `}`:           0,
		`reroute_attempts_total{class="success",` + claude + `}`:        1,
		`reroute_attempts_total{class="http_error",` + claude + `}`:     0,
		`reroute_retries_total{kind="same_target",` + gpt + `}`:         1,
		`reroute_retries_total{kind="failover",` + gpt + `}`:            0,
		`reroute_retries_total{kind="failover",` + claude + `}`:         1,
		`reroute_retries_total{kind="same_target",` + claude + `}`:      0,
		`reroute_exhaustions_total{reason="max_attempts_reached"}`:      1,
		`reroute_exhaustions_total{reason="budget_exhausted"}`:          0,
		`reroute_exhaustions_total{reason="providers_exhausted"}`:       0,
		`reroute_blocks_total{kind="retry_after"}`:                      1,
		`reroute_blocks_total{kind="latency"}`:                          0,
		`reroute_blocks_active{id="openai/gpt-4o",kind="retry_after"}`:  1,
		`reroute_blocks_active{id="openai",kind="retry_after"}`:         0,
		`reroute_blocks_active{id="openai/gpt-4o",kind="ejected"}`:      0,
		`reroute_ejections_total{id="openai/gpt-4o"}`:                   0,
		`reroute_probes_total{` + gpt + `}`:                             0,
		`reroute_target_results_total{result="success",` + gpt + `}`:    2,
		`reroute_target_results_total{result="failure",` + gpt + `}`:    3,
		`reroute_target_results_total{result="success",` + claude + `}`: 1,
		`reroute_attempt_first_byte_seconds_count{` + gpt + `}`:         5,
		`reroute_attempt_first_byte_seconds_count{` + claude + `}`:      1,
		`reroute_attempt_duration_seconds_count{` + gpt + `}`:           5,
		`reroute_attempt_duration_seconds_count{` + claude + `}`:        1,
		// Two retries: the same-target one waited its 20 ms backoff, the
		// failover nothing.
		`reroute_retry_wait_seconds_count`:              2,
		`reroute_retry_wait_seconds_sum`:                0.02,
		`reroute_retry_wait_seconds_bucket{le="0.001"}`: 1,
		`reroute_retry_wait_seconds_bucket{le="0.05"}`:  2,
		`reroute_health_reports_dropped_total`:          0,
		// One per request the engine ran (four).
		`reroute_gateway_overhead_seconds_count`: 4,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}
	if sum := got[`reroute_gateway_overhead_seconds_sum`]; sum <= 0 {
		t.Errorf("gateway overhead sum %v s, want above 0", sum)
	}
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s missing: the Go and process collectors are registered", name)
		}
	}
	scraped := scrapeFamilies(t, url+"/metrics")
	if mfs, err := scraped.Gather(); err != nil || len(mfs) < 20 {
		t.Fatalf("the scrape parsed into %d families: %v", len(mfs), err)
	}
	problems, err := testutil.GatherAndLint(scraped)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// The collector's own series pass testutil.CollectAndLint as the gateway
// registers them, after traffic.
func TestGatewayCollectorLint(t *testing.T) {
	adm, h := newTestGateway(t, fmt.Sprintf(metricsConfig, "http://127.0.0.1:1", "http://127.0.0.1:1"))
	serve(h, `{"model":"gpt-4o"}`) // a connection refused: timeouts and a failover
	problems, err := testutil.CollectAndLint(adm.col)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// newTestGateway builds what run serves on its main listener, from the
// configuration text: the admin endpoints and the proxy, wired to one
// engine, closed at the end of the test.
func newTestGateway(t *testing.T, config string) (*admin, http.Handler) {
	t.Helper()
	cfg, _, err := policy.Parse([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	adm := newAdmin(context.Background(), cfg, "", zap.NewNop())
	e, err := engine.New(cfg, adm.hooks())
	if err != nil {
		t.Fatal(err)
	}
	h, err := httpproxy.New(e)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.Close()
		h.CloseIdleConnections()
	})
	adm.attach(e)
	return adm, adm.handler(h)
}

// serve runs one client request through h and returns its status.
func serve(h http.Handler, body string) int {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, httpproxy.Path, strings.NewReader(body)))
	return w.Code
}

// 100,000 requests naming distinct models the configuration does not have
// leave /metrics with exactly the series it had: no label takes a value
// from a client.
func TestGatewayMetricsCardinality(t *testing.T) {
	p := upstream(t, answer("gpt-4o"))
	_, h := newTestGateway(t, fmt.Sprintf(metricsConfig, p.URL, p.URL))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	if code := serve(h, `{"model":"gpt-4o"}`); code != 200 {
		t.Fatalf("a configured model: %d", code)
	}
	_, body := get(t, srv.URL+"/metrics")
	before := samples(t, body)
	for i := range 100_000 {
		if code := serve(h, `{"model":"unknown-model-`+strconv.Itoa(i)+`"}`); code != http.StatusNotFound {
			t.Fatalf("request %d: status %d, want 404 model_not_found", i, code)
		}
	}
	_, body = get(t, srv.URL+"/metrics")
	after := samples(t, body)
	if len(after) != len(before) {
		t.Errorf("%d series before, %d after", len(before), len(after))
	}
	for key := range after {
		if _, ok := before[key]; !ok {
			t.Errorf("new series %s", key)
		}
	}
	for key, v := range before {
		if strings.HasPrefix(key, "reroute_attempts_total") && after[key] != v {
			t.Errorf("%s went from %v to %v", key, v, after[key])
		}
	}
}

// /healthz, /readyz and /debug/reroute/blocks on the main listener, with a
// Retry-After block live; every other path still reaches the proxy.
func TestGatewayEndpoints(t *testing.T) {
	primary := &scripted{model: "gpt-4o", statuses: []int{429}}
	secondary := &scripted{model: "claude-3-5-sonnet", statuses: []int{200}}
	p, s := upstream(t, primary.ServeHTTP), upstream(t, secondary.ServeHTTP)
	url, _, _ := gateway(t, fmt.Sprintf(metricsConfig, p.URL, s.URL))

	checkHealthAndReady(t, url)
	resp, body := get(t, url+pathBlocks)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || body != "[]\n" {
		t.Fatalf("%s with no block: %d %q %q", pathBlocks, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if resp, body := post(t, url, `{"model":"gpt-4o"}`); resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != "anthropic/claude-3-5-sonnet" {
		t.Fatalf("429 failover: %d %s", resp.StatusCode, body)
	}
	// The list is the health actor's once it has applied every report,
	// so the Retry-After the request has just reported is in it.
	checkRetryAfterBlock(t, url)

	// The proxy still answers every other path itself.
	if resp, body := get(t, url+"/metricsx"); resp.StatusCode != 404 || !strings.Contains(body, `"code":"not_found"`) {
		t.Errorf("/metricsx: %d %s", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodPost, url+pathHealthz, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST %s: %d, Allow %q", pathHealthz, resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func checkHealthAndReady(t *testing.T, url string) {
	t.Helper()
	for path, want := range map[string]string{pathHealthz: "ok\n", pathReadyz: "ready\n"} {
		if resp, body := get(t, url+path); resp.StatusCode != 200 || body != want {
			t.Errorf("%s: %d %q, want 200 %q", path, resp.StatusCode, body, want)
		}
	}
}

// checkRetryAfterBlock expects /debug/reroute/blocks to list the 30 s
// Retry-After block of openai/gpt-4o, and nothing else.
func checkRetryAfterBlock(t *testing.T, url string) {
	t.Helper()
	resp, body := get(t, url+pathBlocks)
	var got []blockJSON
	if err := json.Unmarshal([]byte(body), &got); resp.StatusCode != 200 || err != nil {
		t.Fatalf("%s: %d %v: %s", pathBlocks, resp.StatusCode, err, body)
	}
	// The remaining time is counted on the wall clock from the 429: a
	// little under 30 s, as much under as the test has taken since.
	if len(got) != 1 || got[0].ID != "openai/gpt-4o" || got[0].Kind != "retry_after" ||
		got[0].RemainingSeconds <= 25 || got[0].RemainingSeconds > 30 {
		t.Fatalf("%s: %s, want one retry_after block of openai/gpt-4o with 25 < remaining_seconds ≤ 30", pathBlocks, body)
	}
}

// With -admin-addr the endpoints are on their own listener and the main
// one no longer serves them.
func TestGatewayAdminAddr(t *testing.T) {
	primary := &scripted{model: "gpt-4o", statuses: []int{429}}
	secondary := &scripted{model: "claude-3-5-sonnet", statuses: []int{200}}
	p, s := upstream(t, primary.ServeHTTP), upstream(t, secondary.ServeHTTP)
	url, stop, logs := gateway(t, fmt.Sprintf(metricsConfig, p.URL, s.URL), "-admin-addr", "127.0.0.1:0")
	adminURL := "http://" + adminAddr(t, logs.String())

	checkHealthAndReady(t, adminURL)
	if resp, _ := post(t, url, `{"model":"gpt-4o"}`); resp.StatusCode != 200 {
		t.Fatalf("429 failover: %d", resp.StatusCode)
	}
	checkRetryAfterBlock(t, adminURL)
	resp, body := get(t, adminURL+pathMetrics)
	if got := samples(t, body)[`reroute_attempts_total{class="http_error",target="openai/gpt-4o"}`]; resp.StatusCode != 200 || got != 1 {
		t.Errorf("admin %s: %d, http_error attempts of gpt-4o %v, want 1", pathMetrics, resp.StatusCode, got)
	}
	for _, path := range []string{pathMetrics, pathHealthz, pathReadyz, pathBlocks} {
		if resp, body := get(t, url+path); resp.StatusCode != 404 || !strings.Contains(body, `"code":"not_found"`) {
			t.Errorf("main listener %s: %d %s, want the proxy's 404", path, resp.StatusCode, body)
		}
	}
	if resp, _ := get(t, adminURL+httpproxy.Path); resp.StatusCode != 404 {
		t.Errorf("admin listener %s: %d, want 404", httpproxy.Path, resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	if _, err := client.Get(adminURL + pathHealthz); err == nil {
		t.Error("the admin listener still answers after the gateway stopped")
	}
}

// adminAddr finds the admin listener's address in the gateway's logs.
func adminAddr(t *testing.T, logs string) string {
	t.Helper()
	for line := range strings.Lines(logs) {
		var l struct {
			Msg  string `json:"msg"`
			Addr string `json:"admin_addr"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "admin endpoints listening" {
			return l.Addr
		}
	}
	t.Fatalf("no admin listener in the logs:\n%s", logs)
	return ""
}

// /readyz says 503, with the reason, before the engine is attached, once
// shutdown has started, and after the engine is closed; /healthz says 200
// all along.
func TestReadyzNotReady(t *testing.T) {
	cfg, _, err := policy.Parse([]byte("model_providers: [{model: openai/gpt-4o, base_url: 'http://127.0.0.1:1'}]"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	adm := newAdmin(ctx, cfg, "", zap.NewNop())
	srv := httptest.NewServer(adm)
	t.Cleanup(srv.Close)
	want := func(step string, status int, body string) {
		t.Helper()
		if resp, got := get(t, srv.URL+pathReadyz); resp.StatusCode != status || got != body {
			t.Errorf("%s: /readyz %d %q, want %d %q", step, resp.StatusCode, got, status, body)
		}
		if resp, _ := get(t, srv.URL+pathHealthz); resp.StatusCode != 200 {
			t.Errorf("%s: /healthz %d", step, resp.StatusCode)
		}
	}
	want("before attach", 503, "not ready: the engine is not built yet\n")
	e, err := engine.New(cfg, adm.hooks())
	if err != nil {
		t.Fatal(err)
	}
	adm.attach(e)
	want("running", 200, "ready\n")
	e.Close()
	want("closed", 503, "not ready: the engine is closed\n")
	if resp, body := get(t, srv.URL+pathBlocks); resp.StatusCode != 503 || !strings.Contains(body, `"error"`) {
		t.Errorf("closed: %s %d %s, want 503", pathBlocks, resp.StatusCode, body)
	}
	cancel()
	want("shutting down", 503, "not ready: shutting down\n")
}
