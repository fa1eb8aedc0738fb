package prom_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/benbjohnson/clock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
	"github.com/reroute-go/reroute/prom"
)

func newMock() *clock.Mock {
	m := clock.NewMock()
	m.Set(time.Unix(1_700_000_000, 0))
	return m
}

// compare checks the named metrics of col against the exposition text
// want.
func compare(t *testing.T, col prometheus.Collector, want string, names ...string) {
	t.Helper()
	if err := testutil.CollectAndCompare(col, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

// A success, a 429 with Retry-After that fails over, and a request that
// starts at the fallback because the primary is blocked and exhausts there:
// every counter says exactly that, and the live-state gauge shows the
// Retry-After block until it ends.
func TestCollectorCountsEngineEvents(t *testing.T) {
	mock := newMock()
	col, e := newEngine(t, twoTargets, engine.WithClock(mock))
	s := newScript(map[string][]answer{
		"openai/gpt-4o": {
			{status: 200, ttfb: 300 * time.Millisecond},
			{status: 429, retryAfter: 30, ttfb: 60 * time.Millisecond},
		},
		"anthropic/claude-3-5-sonnet": {{status: 200, ttfb: 700 * time.Millisecond}, {status: 503}},
		"mistral/mistral-large":       {{status: 503}},
	})
	ctx := testContext(t)
	for i, want := range []string{"openai/gpt-4o", "anthropic/claude-3-5-sonnet"} {
		if r, err := e.Do(ctx, "openai/gpt-4o", s.call); err != nil || r.Target != want {
			t.Fatalf("request %d: target %q, %v; want %s", i+1, r.Target, err, want)
		}
	}
	// The Retry-After reaches the health actor without the request
	// waiting for it; let it be applied before the next request.
	if err := e.Actor().Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// gpt-4o is blocked for 30 s: the request starts at its fallback,
	// which answers 503, then the random pick (mistral) answers 503 too,
	// and the 503 key's max_attempts (2) ends the request.
	_, err := e.Do(ctx, "openai/gpt-4o", s.call)
	var ex *engine.ExhaustedError
	if !errors.As(err, &ex) || ex.Reason != engine.ReasonMaxAttempts || len(ex.Attempts) != 2 {
		t.Fatalf("request 3: %v, want exhausted after 2 attempts, max_attempts_reached", err)
	}

	compare(t, col, `
# HELP reroute_attempts_total Upstream attempts finished, by target and outcome class (success, slow_success, http_error, timeout, high_latency, pass_through).
# TYPE reroute_attempts_total counter
`+zeroAttempts(map[string]int{
		"openai/gpt-4o success":                  1,
		"openai/gpt-4o http_error":               1,
		"anthropic/claude-3-5-sonnet success":    1,
		"anthropic/claude-3-5-sonnet http_error": 1,
		"mistral/mistral-large http_error":       1,
	})+`
# HELP reroute_retries_total Decisions to make another attempt, by the target of that attempt; kind failover when it differs from the target that failed, same_target otherwise.
# TYPE reroute_retries_total counter
reroute_retries_total{kind="failover",target="anthropic/claude-3-5-sonnet"} 1
reroute_retries_total{kind="failover",target="mistral/mistral-large"} 1
reroute_retries_total{kind="failover",target="openai/gpt-4o"} 0
reroute_retries_total{kind="same_target",target="anthropic/claude-3-5-sonnet"} 0
reroute_retries_total{kind="same_target",target="mistral/mistral-large"} 0
reroute_retries_total{kind="same_target",target="openai/gpt-4o"} 0
# HELP reroute_exhaustions_total Requests that ended without an answer to deliver, by reason; reason budget_exhausted counts the refusals of the retry budget and of max_retry_duration_ms.
# TYPE reroute_exhaustions_total counter
reroute_exhaustions_total{reason="budget_exhausted"} 0
reroute_exhaustions_total{reason="deadline"} 0
reroute_exhaustions_total{reason="max_attempts_reached"} 1
reroute_exhaustions_total{reason="other"} 0
reroute_exhaustions_total{reason="providers_exhausted"} 0
reroute_exhaustions_total{reason="retrying_requests_limit"} 0
# HELP reroute_blocks_total Blocks created (shared and per-request), by kind (retry_after, latency); extending a live block creates none.
# TYPE reroute_blocks_total counter
reroute_blocks_total{kind="latency"} 0
reroute_blocks_total{kind="retry_after"} 1
# HELP reroute_target_results_total Attempts by target and result, from Engine.Counts: success when the answer was delivered, failure otherwise (a stream cut after commit included).
# TYPE reroute_target_results_total counter
reroute_target_results_total{result="failure",target="anthropic/claude-3-5-sonnet"} 1
reroute_target_results_total{result="failure",target="mistral/mistral-large"} 1
reroute_target_results_total{result="failure",target="openai/gpt-4o"} 1
reroute_target_results_total{result="success",target="anthropic/claude-3-5-sonnet"} 1
reroute_target_results_total{result="success",target="mistral/mistral-large"} 0
reroute_target_results_total{result="success",target="openai/gpt-4o"} 1
# HELP reroute_retry_wait_seconds Wait the engine added before a retry (backoff or Retry-After), 0 for none.
# TYPE reroute_retry_wait_seconds histogram
`+histogram("reroute_retry_wait_seconds", "", prom.DefaultWaitBuckets, 0, 0)+`
# HELP reroute_attempt_first_byte_seconds Time from the start of an attempt to its response headers, by target; attempts that do not know it are left out.
# TYPE reroute_attempt_first_byte_seconds histogram
`+histogram("reroute_attempt_first_byte_seconds", `target="anthropic/claude-3-5-sonnet"`, prom.DefaultLatencyBuckets, 0.7)+
		histogram("reroute_attempt_first_byte_seconds", `target="mistral/mistral-large"`, prom.DefaultLatencyBuckets)+
		histogram("reroute_attempt_first_byte_seconds", `target="openai/gpt-4o"`, prom.DefaultLatencyBuckets, 0.3, 0.06),
		"reroute_attempts_total", "reroute_retries_total", "reroute_exhaustions_total", "reroute_blocks_total",
		"reroute_target_results_total", "reroute_retry_wait_seconds", "reroute_attempt_first_byte_seconds")

	active := func(gpt4oRetryAfter int) string {
		return `
# HELP reroute_blocks_active Whether a shared block or an ejection of the kind (retry_after, latency, ejected) is live now on the identifier (a target id or a provider name): 1 or 0, from the health actor's state.
# TYPE reroute_blocks_active gauge
` + zeroActive(map[string]int{"openai/gpt-4o retry_after": gpt4oRetryAfter})
	}
	compare(t, col, active(1), "reroute_blocks_active")
	mock.Add(30 * time.Second) // the block ends exactly now
	compare(t, col, active(0), "reroute_blocks_active")
}

// Passive health: two failures in a row eject gpt-4o for at most 10 s
// (each request fails over to its fallback); after the cooldown one
// request probes it, and its success recovers it.
func TestCollectorCountsEjectionProbeRecovery(t *testing.T) {
	mock := newMock()
	col, e := newEngine(t, twoTargets, engine.WithClock(mock))
	s := newScript(map[string][]answer{"openai/gpt-4o": {{status: 503}, {status: 503}, {status: 200}}})
	ctx := testContext(t)
	for range 2 {
		if r, err := e.Do(ctx, "openai/gpt-4o", s.call); err != nil || r.Target != "anthropic/claude-3-5-sonnet" {
			t.Fatalf("target %q, %v; want the fallback", r.Target, err)
		}
	}
	const help = `
# HELP reroute_ejections_total Ejections by passive health, by identifier (a target id, or a provider name under scope provider).
# TYPE reroute_ejections_total counter
# HELP reroute_recoveries_total Recoveries of ejected identifiers after a successful probe, by identifier.
# TYPE reroute_recoveries_total counter
# HELP reroute_probes_total Requests that won the one probe of a half-open target, by target.
# TYPE reroute_probes_total counter
# HELP reroute_blocks_active Whether a shared block or an ejection of the kind (retry_after, latency, ejected) is live now on the identifier (a target id or a provider name): 1 or 0, from the health actor's state.
# TYPE reroute_blocks_active gauge
`
	names := []string{"reroute_ejections_total", "reroute_recoveries_total", "reroute_probes_total", "reroute_blocks_active"}
	// The scrape asks the actor first, so the ejection it has just
	// applied is counted in the same scrape.
	compare(t, col, help+perID("reroute_ejections_total", map[string]int{"openai/gpt-4o": 1})+
		perID("reroute_recoveries_total", nil)+perTarget("reroute_probes_total", nil)+
		zeroActive(map[string]int{"openai/gpt-4o ejected": 1}), names...)

	mock.Add(10 * time.Second) // the cooldown (at most 10 s) is over: half-open
	if r, err := e.Do(ctx, "openai/gpt-4o", s.call); err != nil || r.Target != "openai/gpt-4o" {
		t.Fatalf("probe: target %q, %v", r.Target, err)
	}
	compare(t, col, help+perID("reroute_ejections_total", map[string]int{"openai/gpt-4o": 1})+
		perID("reroute_recoveries_total", map[string]int{"openai/gpt-4o": 1})+
		perTarget("reroute_probes_total", map[string]int{"openai/gpt-4o": 1})+
		zeroActive(nil), names...)
}

// Every series exists from New on, and events with indices or names the
// configuration does not have add none: the number of series is the
// configuration's.
func TestCollectorSeriesFixedByConfiguration(t *testing.T) {
	col, e := newEngine(t, twoTargets)
	// 3 targets and 3 providers, all names distinct: attempts 3×6,
	// retries 3×2, hedges 3, abandoned attempts 3, exhaustions 6, blocks 2, ejections and recoveries 6
	// each, probes 3, the two latency histograms 3 each, the wait and the
	// overhead histograms 1 each, continuations 3×2, blocks_active 6×3,
	// results 3×2, the actor's 2.
	const want = 18 + 6 + 3 + 3 + 6 + 2 + 6 + 6 + 3 + 3 + 3 + 1 + 1 + 6 + 18 + 6 + 2
	if n := testutil.CollectAndCount(col); n != want {
		t.Fatalf("%d series at New, want %d", n, want)
	}
	h := col.Hooks()
	h.Attempt(engine.AttemptEvent{Index: 3, Class: policy.Success, TTFB: time.Second})
	h.Attempt(engine.AttemptEvent{Index: -1, Class: policy.Success})
	h.Attempt(engine.AttemptEvent{Index: 0, Class: policy.Class(200)})
	h.Retry(engine.RetryEvent{FromIndex: 0, ToIndex: 9})
	h.Continue(engine.ContinueEvent{FromIndex: 0, ToIndex: -2})
	h.Hedge(engine.HedgeEvent{FromIndex: 0, ToIndex: 9})
	h.Attempt(engine.AttemptEvent{Index: 7, Abandoned: true})
	h.Exhausted("a_reason_of_tomorrow")
	h.Block("openai/gpt-4o", health.Kind(7), time.Second)
	h.Ejected("nobody/else", time.Second, 1)
	h.Recovered("nobody/else")
	h.Probe("nobody/else")
	if _, err := e.Do(testContext(t), "no/such-model", newScript(nil).call); !errors.Is(err, engine.ErrUnknownModel) {
		t.Fatalf("unknown model: %v", err)
	}
	if n := testutil.CollectAndCount(col); n != want {
		t.Fatalf("%d series after unknown events, want %d", n, want)
	}
	compare(t, col, `
# HELP reroute_exhaustions_total Requests that ended without an answer to deliver, by reason; reason budget_exhausted counts the refusals of the retry budget and of max_retry_duration_ms.
# TYPE reroute_exhaustions_total counter
reroute_exhaustions_total{reason="budget_exhausted"} 0
reroute_exhaustions_total{reason="deadline"} 0
reroute_exhaustions_total{reason="max_attempts_reached"} 0
reroute_exhaustions_total{reason="other"} 1
reroute_exhaustions_total{reason="providers_exhausted"} 0
reroute_exhaustions_total{reason="retrying_requests_limit"} 0
`, "reroute_exhaustions_total")
}

// A target id without a slash is also its provider's name: the two
// identifiers share one series rather than making two with the same
// labels, which a registry would refuse.
func TestCollectorSharedIdentifierName(t *testing.T) {
	col, _ := newEngine(t, `
model_providers:
  - model: local
  - model: openai/gpt-4o
`)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	// Identifiers local, openai/gpt-4o, local (provider), openai: three
	// names.
	if n := testutil.CollectAndCount(col, "reroute_ejections_total"); n != 3 {
		t.Fatalf("%d ejection series, want 3 (local, openai/gpt-4o, openai)", n)
	}
}

func TestCollectorLint(t *testing.T) {
	col, _ := newEngine(t, twoTargets)
	problems, err := testutil.CollectAndLint(col)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// Before Attach, a scrape has the hook-driven metrics only; a pedantic
// registry accepts it either way.
func TestCollectorBeforeAttach(t *testing.T) {
	cfg := mustConfig(t, twoTargets)
	col := prom.New(cfg.Compiled())
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"reroute_blocks_active", "reroute_target_results_total", "reroute_health_reports_dropped_total"} {
		if n := testutil.CollectAndCount(col, name); n != 0 {
			t.Errorf("%s: %d series before Attach, want 0", name, n)
		}
	}
	if n := testutil.CollectAndCount(col, "reroute_attempts_total"); n != 18 {
		t.Errorf("reroute_attempts_total: %d series, want 18", n)
	}
}

// After Close the actor is stopped: the live-state gauge is left out, the
// counters are still there.
func TestCollectorAfterClose(t *testing.T) {
	col, e := newEngine(t, twoTargets)
	if _, err := e.Do(testContext(t), "openai/gpt-4o", newScript(nil).call); err != nil {
		t.Fatal(err)
	}
	e.Close()
	if n := testutil.CollectAndCount(col, "reroute_blocks_active"); n != 0 {
		t.Errorf("reroute_blocks_active: %d series after Close, want 0", n)
	}
	compare(t, col, `
# HELP reroute_target_results_total Attempts by target and result, from Engine.Counts: success when the answer was delivered, failure otherwise (a stream cut after commit included).
# TYPE reroute_target_results_total counter
reroute_target_results_total{result="failure",target="anthropic/claude-3-5-sonnet"} 0
reroute_target_results_total{result="failure",target="mistral/mistral-large"} 0
reroute_target_results_total{result="failure",target="openai/gpt-4o"} 0
reroute_target_results_total{result="success",target="anthropic/claude-3-5-sonnet"} 0
reroute_target_results_total{result="success",target="mistral/mistral-large"} 0
reroute_target_results_total{result="success",target="openai/gpt-4o"} 1
`, "reroute_target_results_total")
}

func TestAttachRefusesAnotherConfiguration(t *testing.T) {
	col := prom.New(mustConfig(t, twoTargets).Compiled())
	_, other := newEngine(t, "model_providers: [{model: openai/gpt-4o}]")
	if err := col.Attach(other); !errors.Is(err, prom.ErrMismatch) {
		t.Fatalf("Attach: %v, want ErrMismatch", err)
	}
}

// A stream's duration is observed when it ends, through the End hook.
func TestCollectorObservesStreamEnd(t *testing.T) {
	c := prom.New(mustConfig(t, "model_providers: [{model: openai/gpt-4o}]").Compiled())
	h := c.Hooks()
	h.End(engine.EndEvent{Target: "openai/gpt-4o", Index: 0, Total: 2 * time.Second})
	h.End(engine.EndEvent{Target: "nope", Index: 7, Total: time.Second}) // out of range: ignored
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "reroute_attempt_duration_seconds" {
			continue
		}
		if len(mf.GetMetric()) != 1 {
			t.Fatalf("%d series", len(mf.GetMetric()))
		}
		if hg := mf.GetMetric()[0].GetHistogram(); hg.GetSampleCount() != 1 || hg.GetSampleSum() != 2 {
			t.Fatalf("histogram count %d sum %g, want 1 and 2", hg.GetSampleCount(), hg.GetSampleSum())
		}
		return
	}
	t.Fatal("no reroute_attempt_duration_seconds")
}

// A continuation is counted by the target that continues and whether it
// continues its own answer.
func TestCollectorCountsContinuations(t *testing.T) {
	col, e := newEngine(t, twoTargets)
	ctx := testContext(t)
	ok := func(context.Context, engine.Attempt) policy.Outcome { return policy.Outcome{Status: 200} }
	all := func(int) bool { return true }
	for _, cause := range []error{
		errors.Join(engine.ErrConnectionLost, errors.New("cut")), // gpt-4o continues itself
		errors.New("malformed events"),                           // its fallback continues
	} {
		res, err := e.Do(ctx, "openai/gpt-4o", ok)
		if err != nil {
			t.Fatal(err)
		}
		res.End(time.Second, cause)
		if _, err := e.Continue(ctx, res, cause, all, ok); err != nil {
			t.Fatal(err)
		}
	}
	compare(t, col, `
# HELP reroute_continuations_total Attempts decided to continue a streamed answer that failed after commit, by the target that continues it; kind same_target when it continues its own answer, failover otherwise.
# TYPE reroute_continuations_total counter
reroute_continuations_total{kind="failover",target="anthropic/claude-3-5-sonnet"} 1
reroute_continuations_total{kind="failover",target="mistral/mistral-large"} 0
reroute_continuations_total{kind="failover",target="openai/gpt-4o"} 0
reroute_continuations_total{kind="same_target",target="anthropic/claude-3-5-sonnet"} 0
reroute_continuations_total{kind="same_target",target="mistral/mistral-large"} 0
reroute_continuations_total{kind="same_target",target="openai/gpt-4o"} 1
`, "reroute_continuations_total")
}

// A hedge that wins: the hedge is counted by its target, the abandoned
// primary in reroute_abandoned_attempts_total and not in
// reroute_attempts_total.
func TestCollectorCountsHedges(t *testing.T) {
	col := prom.New(mustConfig(t, twoTargets).Compiled())
	h := col.Hooks()
	h.Hedge(engine.HedgeEvent{From: "openai/gpt-4o", To: "anthropic/claude-3-5-sonnet", FromIndex: 0, ToIndex: 1, Number: 2, Delay: time.Second})
	h.Attempt(engine.AttemptEvent{Index: 1, Number: 2, Class: policy.Success, Status: 200})
	h.Attempt(engine.AttemptEvent{Index: 0, Number: 1, Class: policy.Timeout, Abandoned: true, Total: 2 * time.Second})
	compare(t, col, `
# HELP reroute_hedges_total Hedges started beside an attempt whose first token was late, by the target of the hedge.
# TYPE reroute_hedges_total counter
reroute_hedges_total{target="anthropic/claude-3-5-sonnet"} 1
reroute_hedges_total{target="mistral/mistral-large"} 0
reroute_hedges_total{target="openai/gpt-4o"} 0
# HELP reroute_abandoned_attempts_total Attempts cancelled because the other attempt of a hedge's race answered first, by target; they are not in reroute_attempts_total.
# TYPE reroute_abandoned_attempts_total counter
reroute_abandoned_attempts_total{target="anthropic/claude-3-5-sonnet"} 0
reroute_abandoned_attempts_total{target="mistral/mistral-large"} 0
reroute_abandoned_attempts_total{target="openai/gpt-4o"} 1
`, "reroute_hedges_total", "reroute_abandoned_attempts_total")
	// Only the hedge's success is an attempt.
	var n int
	ch := make(chan prometheus.Metric, 64)
	go func() { col.Collect(ch); close(ch) }()
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(m.Desc().String(), `"reroute_attempts_total"`) && d.GetCounter().GetValue() > 0 {
			n += int(d.GetCounter().GetValue())
		}
	}
	if n != 1 {
		t.Fatalf("reroute_attempts_total sums to %d, want 1 (the hedge's success)", n)
	}
}
