package bench

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Every sample runs in sim mode, beside both baselines, and behaves as its
// story says. The samples with a plain configuration (fast-outage,
// fast-outage-stream, random-failures, cascade, flap) describe what a good
// engine should do; where reroute does not do it yet, the check asserts
// the floor it holds (never worse than the naive baseline) and what the
// baselines do, and leaves the rest of the story to the scenario's
// header.
func TestSamplesBehave(t *testing.T) {
	share := func(m map[string]int64, target string) float64 {
		var all int64
		for _, v := range m {
			all += v
		}
		if all == 0 {
			return 0
		}
		return float64(m[target]) / float64(all)
	}
	const gpt, claude, gemini = "openai/gpt-4o", "anthropic/claude-3-5-sonnet", "google/gemini-1.5-pro"
	// outage checks a fast 503 outage of the primary from 10 s to until,
	// with claude as the one healthy fallback.
	outage := func(until time.Duration) func(t *testing.T, r *Result) {
		return func(t *testing.T, r *Result) {
			naive, fo := r.Baselines[0], r.Baselines[1]
			atLeast(t, "reroute's success rate over naive's", r.SuccessRate-naive.SuccessRate, 0)
			if fo.Succeeded != fo.Requests {
				t.Errorf("naive-failover: %d of %d succeeded, %v", fo.Succeeded, fo.Requests, fo.FailuresByReason)
			}
			// Inside the outage every naive-failover request makes three
			// attempts on the primary, then one on claude.
			w := window(fo, 12*time.Second, until-2*time.Second)
			atLeast(t, "naive-failover: primary attempts per claude attempt in the outage", float64(w[gpt])/float64(w[claude]), 2.95)
			atMost(t, "naive-failover: primary attempts per claude attempt in the outage", float64(w[gpt])/float64(w[claude]), 3.05)
			// Naive loses what arrives in the outage.
			atLeast(t, "naive's failure share", float64(naive.Failed)/float64(naive.Requests), 0.9*float64(until-10*time.Second)/float64(r.ScenarioDurationMs*1e6))
			// Passive health: nothing is lost, the dead primary is left
			// alone but for about one probe per cooldown, and it serves
			// again within 30 s of recovering.
			atLeast(t, "success rate", r.SuccessRate, 0.999)
			atLeast(t, "success rate against naive-failover's", r.SuccessRate-fo.SuccessRate, -0.001)
			down := window(r, 10*time.Second, until)[gpt]
			atMost(t, "attempts to the primary while it is down", float64(down), 99)
			atMost(t, "attempts to the primary while down, against naive-failover's", float64(down)/float64(window(fo, 10*time.Second, until)[gpt]), 0.02)
			back := recoveredAt(r, gpt, until)
			atMost(t, "seconds until the recovered primary serves again", (back - until).Seconds(), 30)
		}
	}
	tests := map[string]func(t *testing.T, r *Result){
		"default.yaml": func(t *testing.T, r *Result) {
			atLeast(t, "success rate", r.SuccessRate, 0.99)
			for _, tg := range []string{gpt, claude, gemini} {
				if r.ServedByTarget[tg] == 0 {
					t.Errorf("%s served nothing: %v", tg, r.ServedByTarget)
				}
			}
			hasBlock(t, r, gpt, "retry_after")
			hasBlock(t, r, claude, "latency")
			atMost(t, "primary's share of attempts during the rate limit", share(window(r, 22*time.Second, 58*time.Second), gpt), 0.1)
			atLeast(t, "primary's share of attempts after it", share(window(r, 65*time.Second, 95*time.Second), gpt), 0.95)
		},
		"rate-limited.yaml": func(t *testing.T, r *Result) {
			atLeast(t, "success rate", r.SuccessRate, 0.98)
			hasBlock(t, r, gpt, "retry_after")
			// During the window most requests are served elsewhere.
			atMost(t, "primary's share of attempts during the window", share(window(r, 12*time.Second, 38*time.Second), gpt), 0.15)
			atLeast(t, "primary's share of attempts after the window", share(window(r, 45*time.Second, 100*time.Second), gpt), 0.95)
		},
		"primary-outage.yaml": func(t *testing.T, r *Result) {
			atLeast(t, "success rate", r.SuccessRate, 0.9)
			hasBlock(t, r, gpt, "latency")
			atMost(t, "primary's share of attempts inside the outage", share(window(r, 25*time.Second, 35*time.Second), gpt), 0.1)
			atMost(t, "p99 latency (ms)", r.LatencyMs.P99, 10000)
		},
		"brownout.yaml": func(t *testing.T, r *Result) {
			atLeast(t, "success rate", r.SuccessRate, 0.999)
			hasBlock(t, r, gpt, "latency")
			atMost(t, "primary's share of attempts in the brownout", share(window(r, 30*time.Second, 60*time.Second), gpt), 0.3)
		},
		"flapping.yaml": func(t *testing.T, r *Result) {
			atLeast(t, "success rate", r.SuccessRate, 0.99)
			n := 0
			for _, b := range r.Blocks {
				if b.ID == gpt && b.Kind == "retry_after" {
					n++
				}
			}
			if n < 4 {
				t.Errorf("%d Retry-After block spans on the primary, want one per failing stretch (5)", n)
			}
			atMost(t, "amplification", r.Amplification, 1.1)
		},
		"retry-storm.yaml": func(t *testing.T, r *Result) {
			// The policy allows four attempts a request; passive health
			// ejects every failing provider, a request that has had its
			// attempt skips the ejected alternatives, and the budget
			// bounds the same-provider retries: the storm stays near the
			// offered load.
			if r.FailuresByReason["providers_exhausted"] == 0 {
				t.Errorf("no providers_exhausted failures: %v", r.FailuresByReason)
			}
			hasBlock(t, r, gpt, "ejected")
			atMost(t, "amplification", r.Amplification, 1.3)
		},
		"all-blocked.yaml": func(t *testing.T, r *Result) {
			if n := r.FailuresByReason["providers_exhausted"]; n < r.Requests/4 {
				t.Errorf("%d providers_exhausted failures of %d requests: %v", n, r.Requests, r.FailuresByReason)
			}
			for _, tg := range []string{gpt, claude, gemini} {
				hasBlock(t, r, tg, "retry_after")
			}
			var attempts int64
			for _, v := range window(r, 12*time.Second, 28*time.Second) {
				attempts += v
			}
			atMost(t, "attempts while everything is blocked", float64(attempts), 10)
		},
		"healthy.yaml": func(t *testing.T, r *Result) {
			if r.Succeeded != r.Requests || r.Attempts != r.Requests || r.ServedByTarget[gpt] != r.Requests || len(r.Blocks) != 0 {
				t.Errorf("healthy run: %d of %d succeeded with %d attempts, served %v, blocks %v", r.Succeeded, r.Requests, r.Attempts, r.ServedByTarget, r.Blocks)
			}
		},
		"fast-outage.yaml":        outage(40 * time.Second),
		"fast-outage-stream.yaml": outage(40 * time.Second),
		"flap.yaml":               outage(70 * time.Second),
		"random-failures.yaml": func(t *testing.T, r *Result) {
			naive, fo := r.Baselines[0], r.Baselines[1]
			atLeast(t, "reroute's success rate over naive's", r.SuccessRate-naive.SuccessRate, 0)
			// Nothing is lost, and no failover is refused. A primary that
			// fails 30 % of attempts at random is ejected now and then
			// (five failures in a row); its probe then fails 30 % of the
			// time, which ejects it again for twice as long, so the
			// healthy fallback serves most requests.
			atLeast(t, "success rate", r.SuccessRate, 0.999)
			if r.FailuresByReason["budget_exhausted"] != 0 {
				t.Errorf("failovers refused by the budget: %v", r.FailuresByReason)
			}
			hasBlock(t, r, gpt, "ejected")
			if r.ServedByTarget[gpt] == 0 {
				t.Errorf("the primary never served: %v", r.ServedByTarget)
			}
			// Naive fails a request when three draws of 30 % all fail
			// (2.7 %); naive-failover then has the healthy fallback.
			atLeast(t, "naive's failure rate", 1-naive.SuccessRate, 0.015)
			atMost(t, "naive's failure rate", 1-naive.SuccessRate, 0.04)
			if fo.Succeeded != fo.Requests || fo.ServedByTarget[claude] == 0 {
				t.Errorf("naive-failover: %d of %d succeeded, served %v", fo.Succeeded, fo.Requests, fo.ServedByTarget)
			}
		},
		"cascade.yaml": func(t *testing.T, r *Result) {
			naive, fo := r.Baselines[0], r.Baselines[1]
			atLeast(t, "reroute's success rate over naive's", r.SuccessRate-naive.SuccessRate, 0)
			if fo.Succeeded != fo.Requests {
				t.Errorf("naive-failover: %d of %d succeeded, %v", fo.Succeeded, fo.Requests, fo.FailuresByReason)
			}
			// naive-failover walks the list in order: gemini only
			// while the two before it are both down (25-40 s).
			if n := window(fo, 27*time.Second, 38*time.Second)[gemini]; n == 0 {
				t.Error("naive-failover sent nothing to gemini while the first two were down")
			}
			if n := window(fo, 0, 24*time.Second)[gemini] + window(fo, 41*time.Second, 80*time.Second)[gemini]; n != 0 {
				t.Errorf("naive-failover sent %d attempts to gemini while an earlier target was healthy", n)
			}
		},
		"ttfb-brownout.yaml": func(t *testing.T, r *Result) {
			// Nothing fails either way: the brownout costs only time. The
			// hedge cuts the tail to about its delay plus the fallback's
			// answer, at the price of one extra attempt per slow request.
			noHedge := r.Baselines[2]
			if r.Succeeded != r.Requests || noHedge.Succeeded != noHedge.Requests {
				t.Errorf("failures: %v, no-hedge %v", r.FailuresByReason, noHedge.FailuresByReason)
			}
			atMost(t, "p99 with hedging over p99 without", r.LatencyMs.P99/noHedge.LatencyMs.P99, 0.5)
			if r.Hedges == 0 || r.Attempts != r.Requests+r.Hedges || noHedge.Attempts != noHedge.Requests {
				t.Errorf("hedges %d, attempts %d of %d requests; no-hedge %d attempts", r.Hedges, r.Attempts, r.Requests, noHedge.Attempts)
			}
			// Only the brownout's requests hedge (half of the arrivals,
			// 20-80 s of a 120 s run): the healthy first token comes long
			// before the delay.
			atMost(t, "hedges per request", float64(r.Hedges)/float64(r.Requests), 0.55)
			atLeast(t, "hedges per request", float64(r.Hedges)/float64(r.Requests), 0.3)
			if n := window(r, 0, 19*time.Second)[claude]; n != 0 {
				t.Errorf("%d hedges before the brownout", n)
			}
		},
		"stream-resets.yaml": func(t *testing.T, r *Result) {
			atLeast(t, "success rate", r.SuccessRate, 0.999)
			if r.Attempts <= r.Requests {
				t.Errorf("%d attempts for %d requests: resets were not retried", r.Attempts, r.Requests)
			}
		},
	}
	for _, name := range SampleScenarios() {
		t.Run(name, func(t *testing.T) {
			check, ok := tests[name]
			if !ok {
				t.Fatalf("no expectations for sample %s: add them here", name)
			}
			sc := mustSample(t, name)
			r, err := Run(context.Background(), sc, ModeSim, Baselines, Options{})
			if err != nil {
				t.Fatal(err)
			}
			checkInvariants(t, r)
			if r.Requests != int64(sc.Workload.Requests) {
				t.Errorf("%d requests, the scenario has %d", r.Requests, sc.Workload.Requests)
			}
			if len(r.Baselines) != len(Baselines) {
				t.Fatalf("%d baselines, want %d", len(r.Baselines), len(Baselines))
			}
			for i, b := range r.Baselines {
				checkInvariants(t, b)
				if b.Policy != Baselines[i] || b.Requests != r.Requests {
					t.Errorf("baseline %q ran %d requests, reroute %d", b.Policy, b.Requests, r.Requests)
				}
				if naiveBaseline(b.Policy) && len(b.Blocks) != 0 {
					t.Errorf("baseline %q has blocks: %v", b.Policy, b.Blocks)
				}
				if b.Hedges != 0 {
					t.Errorf("baseline %q hedged %d times", b.Policy, b.Hedges)
				}
			}
			check(t, r)
		})
	}
}

func atLeast(t *testing.T, what string, got, want float64) {
	t.Helper()
	if got < want {
		t.Errorf("%s = %v, want ≥ %v", what, got, want)
	}
}

func atMost(t *testing.T, what string, got, want float64) {
	t.Helper()
	if got > want {
		t.Errorf("%s = %v, want ≤ %v", what, got, want)
	}
}

func hasBlock(t *testing.T, r *Result, id, kind string) {
	t.Helper()
	for _, b := range r.Blocks {
		if b.ID == id && b.Kind == kind {
			if b.ToMs <= b.FromMs {
				t.Errorf("empty block span %+v", b)
			}
			return
		}
	}
	t.Errorf("no %s block on %s: %+v", kind, id, r.Blocks)
}

// checkInvariants checks the bookkeeping of a result.
func checkInvariants(t *testing.T, r *Result) {
	t.Helper()
	if r.Succeeded+r.Failed != r.Requests {
		t.Errorf("succeeded %d + failed %d != requests %d", r.Succeeded, r.Failed, r.Requests)
	}
	sum := func(m map[string]int64) (n int64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	if n := sum(r.AttemptsByTarget); n != r.Attempts {
		t.Errorf("attempts by target sum to %d, attempts %d", n, r.Attempts)
	}
	if n := sum(r.ServedByTarget); n != r.Succeeded {
		t.Errorf("served by target sum to %d, succeeded %d", n, r.Succeeded)
	}
	if n := sum(r.FailuresByReason); n != r.Failed {
		t.Errorf("failures by reason sum to %d, failed %d", n, r.Failed)
	}
	s := r.series
	var arr, ok, fail, att int64
	for b := range s.arrivals {
		arr += s.arrivals[b]
		ok += s.succeeded[b]
		fail += s.failed[b]
		for tg := range s.nt {
			att += s.attempts[b*s.nt+tg]
		}
	}
	if arr != r.Requests || ok != r.Succeeded || fail != r.Failed || att != r.Attempts {
		t.Errorf("series totals %d/%d/%d/%d, result %d/%d/%d/%d", arr, ok, fail, att, r.Requests, r.Succeeded, r.Failed, r.Attempts)
	}
	if r.Succeeded > 0 && !(r.LatencyMs.P50 <= r.LatencyMs.P90 && r.LatencyMs.P90 <= r.LatencyMs.P99 && r.LatencyMs.P99 <= r.LatencyMs.Max && r.LatencyMs.P50 > 0) {
		t.Errorf("latency percentiles out of order: %+v", r.LatencyMs)
	}
}

// The same scenario and seed give byte-identical JSON, the wall section
// aside; another seed gives another run.
func TestDeterminism(t *testing.T) {
	for _, name := range []string{"default.yaml", "rate-limited.yaml", "brownout.yaml", "retry-storm.yaml"} {
		t.Run(name, func(t *testing.T) {
			sc := mustSample(t, name)
			run := func(o Options) []byte {
				r, err := Run(context.Background(), sc, ModeSim, Baselines, o)
				if err != nil {
					t.Fatal(err)
				}
				return jsonWithoutWall(t, r)
			}
			a, b := run(Options{}), run(Options{})
			if !bytes.Equal(a, b) {
				t.Fatalf("two runs differ:\n%s\n---\n%s", a, b)
			}
			seed := sc.Seed + 1
			if c := run(Options{Seed: &seed}); bytes.Equal(a, c) {
				t.Errorf("seed %d gave the same result as seed %d", seed, sc.Seed)
			}
		})
	}
}

func TestOptionsOverride(t *testing.T) {
	sc := mustScenario(t, "default.yaml", DefaultScenario())
	seed := uint64(99)
	r := mustSimulate(t, sc, Options{Requests: 500, Seed: &seed}, BaselineNone)
	if r.Requests != 500 || r.Seed != 99 {
		t.Errorf("requests %d seed %d, want 500 and 99", r.Requests, r.Seed)
	}
	m := decodeJSON(t, jsonWithoutWall(t, r))
	for _, k := range []string{"scenario", "mode", "seed", "requests", "succeeded", "failed", "success_rate", "attempts",
		"amplification", "attempts_by_target", "served_by_target", "failures_by_reason", "latency_ms", "scenario_duration_ms", "wall"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	for _, k := range []string{"p50", "p90", "p99", "max"} {
		if _, ok := m["latency_ms"].(map[string]any)[k]; !ok {
			t.Errorf("latency_ms lacks %q", k)
		}
	}
	if _, ok := m["wall"].(map[string]any)["requests_per_second"]; !ok {
		t.Error("wall lacks requests_per_second")
	}
}

func TestProgress(t *testing.T) {
	sc := mustScenario(t, "default.yaml", DefaultScenario())
	var calls []Progress
	r := mustSimulate(t, sc, Options{Requests: 2000, ProgressEvery: time.Nanosecond, Progress: func(p Progress) { calls = append(calls, p) }}, BaselineNone)
	if len(calls) == 0 || !calls[len(calls)-1].Final {
		t.Fatalf("progress calls %+v, want a final one", calls)
	}
	last := calls[len(calls)-1]
	if last.Done != r.Requests || last.Total != 2000 || last.Succeeded != r.Succeeded || last.Policy != "reroute" {
		t.Errorf("final progress %+v", last)
	}
}

// The naive baseline sends everything to the primary, up to three times,
// and never waits.
func TestNaiveBaseline(t *testing.T) {
	sc := mustScenario(t, "default.yaml", DefaultScenario())
	r := mustSimulate(t, sc, Options{}, BaselineNaive)
	for tg, n := range r.AttemptsByTarget {
		if tg != sc.Workload.Model && n != 0 {
			t.Errorf("naive sent %d attempts to %s", n, tg)
		}
	}
	if r.Attempts > 3*r.Requests || r.Attempts <= r.Requests {
		t.Errorf("%d attempts for %d requests", r.Attempts, r.Requests)
	}
	reroute := mustSimulate(t, sc, Options{}, BaselineNone)
	if r.SuccessRate >= reroute.SuccessRate {
		t.Errorf("naive success %v ≥ reroute %v on the default scenario", r.SuccessRate, reroute.SuccessRate)
	}
	if r.FailuresByReason["max_attempts_reached"] != r.Failed {
		t.Errorf("naive failures %v", r.FailuresByReason)
	}
}

// attemptLog lists a run's attempts in order of their start, as "20ms
// openai/gpt-4o" (the start of the series bucket), and fails the test
// unless every bucket holds at most one attempt, which the scenarios that
// use it space out.
func attemptLog(t *testing.T, r *Result) []string {
	t.Helper()
	s := r.series
	var out []string
	for b := range s.arrivals {
		n := 0
		for tg, name := range r.scenario.Targets {
			if k := s.attempts[b*s.nt+tg]; k > 0 {
				n += int(k)
				out = append(out, (time.Duration(b)*time.Duration(s.width)).String()+" "+name)
			}
		}
		if n > 1 {
			t.Fatalf("bucket %d of %v holds %d attempts: the log would lose their order", b, time.Duration(s.width), n)
		}
	}
	return out
}

// The baselines' rule, attempt by attempt, on one request: naive tries the
// primary three times and gives up; naive-failover then tries each
// fallback three times in the order written, at once, and the first 2xx
// ends the request. A 429 is retried like a 503 (no Retry-After is read),
// and the request's deadline cuts the walk.
func TestBaselineAttempts(t *testing.T) {
	scenario := func(timeout string) *Scenario {
		return mustScenario(t, "walk.yaml", doc(
			"config:",
			"  model_providers:",
			"    - model: openai/gpt-4o",
			"      retry_policy: {fallback_models: [anthropic/claude-3-5-sonnet, google/gemini-1.5-pro]}",
			"    - model: anthropic/claude-3-5-sonnet",
			"    - model: google/gemini-1.5-pro",
			"workload: {model: openai/gpt-4o, requests: 1, concurrency: 1, timeout: "+timeout+"}",
			"upstreams:",
			"  openai/gpt-4o: {phases: [{status: 503, latency: {ttfb: 20ms}}]}",
			"  anthropic/claude-3-5-sonnet: {phases: [{status: 429, retry_after: \"30\", latency: {ttfb: 20ms}}]}",
			"  google/gemini-1.5-pro: {latency: {ttfb: 20ms, total: 50ms}}",
		))
	}
	const gpt, claude, gemini = "openai/gpt-4o", "anthropic/claude-3-5-sonnet", "google/gemini-1.5-pro"
	tests := []struct {
		name     string
		baseline string
		timeout  string
		log      []string
		served   string // "" when the request fails
		reason   string
		endMs    float64
	}{
		{"naive", BaselineNaive, "30s",
			[]string{"0s " + gpt, "20ms " + gpt, "40ms " + gpt},
			"", "max_attempts_reached", 60},
		{"naive-failover", BaselineNaiveFailover, "30s",
			[]string{"0s " + gpt, "20ms " + gpt, "40ms " + gpt, "60ms " + claude, "80ms " + claude, "100ms " + claude, "120ms " + gemini},
			gemini, "", 170},
		{"naive-failover cut by the deadline", BaselineNaiveFailover, "130ms",
			[]string{"0s " + gpt, "20ms " + gpt, "40ms " + gpt, "60ms " + claude, "80ms " + claude, "100ms " + claude, "120ms " + gemini},
			"", "deadline", 130},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustSimulate(t, scenario(tt.timeout), Options{}, tt.baseline)
			checkInvariants(t, r)
			if got := attemptLog(t, r); !slices.Equal(got, tt.log) {
				t.Errorf("attempts\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.log, "\n"))
			}
			if tt.served != "" && r.ServedByTarget[tt.served] != 1 {
				t.Errorf("served %v, want %s", r.ServedByTarget, tt.served)
			}
			if tt.reason != "" && r.FailuresByReason[tt.reason] != 1 {
				t.Errorf("failures %v, want %s", r.FailuresByReason, tt.reason)
			}
			if r.ScenarioDurationMs != tt.endMs {
				t.Errorf("ended at %v ms, want %v: no waits between attempts", r.ScenarioDurationMs, tt.endMs)
			}
			if r.Policy != tt.baseline {
				t.Errorf("policy %q", r.Policy)
			}
		})
	}
}

// baselineChain takes the primary's compiled fallbacks: in the order
// written, unconfigured entries and repeats dropped; naive and a primary
// without fallbacks walk the primary alone.
func TestBaselineChain(t *testing.T) {
	sc := mustScenario(t, "chain.yaml", doc(
		"config:",
		"  model_providers:",
		"    - model: openai/gpt-4o",
		"      retry_policy:",
		"        fallback_models: [google/gemini-1.5-pro, mistral/large, anthropic/claude-3-5-sonnet, google/gemini-1.5-pro]",
		"    - model: anthropic/claude-3-5-sonnet",
		"    - model: google/gemini-1.5-pro",
		"workload: {model: openai/gpt-4o, requests: 1, concurrency: 1}",
	))
	cfg, err := sc.NewConfig()
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Compiled()
	idx := func(name string) int {
		i, ok := c.Lookup(name)
		if !ok {
			t.Fatalf("%s not configured", name)
		}
		return i
	}
	gpt, claude, gemini := idx("openai/gpt-4o"), idx("anthropic/claude-3-5-sonnet"), idx("google/gemini-1.5-pro")
	for _, tt := range []struct {
		primary  int
		baseline string
		want     []int
	}{
		{gpt, BaselineNaiveFailover, []int{gpt, gemini, claude}},
		{gpt, BaselineNaive, []int{gpt}},
		{claude, BaselineNaiveFailover, []int{claude}},
	} {
		if got := baselineChain(c, tt.primary, tt.baseline); !slices.Equal(got, tt.want) {
			t.Errorf("chain of %s under %s = %v, want %v", c.Targets[tt.primary], tt.baseline, got, tt.want)
		}
	}
}

func TestParseBaselines(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"", nil, false},
		{"none", nil, false},
		{"naive", []string{BaselineNaive}, false},
		{"naive-failover, naive,naive-failover", []string{BaselineNaiveFailover, BaselineNaive}, false},
		{"naive,none", []string{BaselineNaive}, false},
		{"naive,smart", nil, true},
	} {
		got, err := ParseBaselines(tt.in)
		if (err != nil) != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("ParseBaselines(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
	if _, err := Run(context.Background(), mustScenario(t, "default.yaml", DefaultScenario()), ModeSim, []string{"smart"}, Options{}); err == nil {
		t.Error("Run with an unknown baseline: no error")
	}
}

// recoveredAt returns the start of the first second after from in which
// target got at least 90 % of the attempts, or a day when none did.
func recoveredAt(r *Result, target string, from time.Duration) time.Duration {
	end := time.Duration(r.ScenarioDurationMs) * time.Millisecond
	for at := from; at+time.Second <= end; at += time.Second {
		w := window(r, at, at+time.Second)
		var all int64
		for _, v := range w {
			all += v
		}
		if all > 0 && float64(w[target]) >= 0.9*float64(all) {
			return at
		}
	}
	return 24 * time.Hour
}

// A hang without an attempt timeout runs into the request's deadline.
func TestHangUntilDeadline(t *testing.T) {
	hang := func(engine string) *Scenario {
		return mustScenario(t, "hang.yaml", doc(
			"config:",
			"  model_providers:",
			"    - model: openai/gpt-4o",
			"      retry_policy: {on_timeout: {strategy: different_provider, max_attempts: 2}}",
			"    - model: anthropic/claude-3-5-sonnet",
			"  engine: "+engine,
			"workload: {model: openai/gpt-4o, requests: 50, concurrency: 5, timeout: 3s}",
			"upstreams:",
			"  openai/gpt-4o:",
			"    phases: [{hang: true}]",
		))
	}
	r := mustSimulate(t, hang("{passive_health: {enabled: false}}"), Options{}, BaselineNone)
	if r.Failed != 50 || r.FailuresByReason["deadline"] != 50 || r.Attempts != 50 {
		t.Errorf("failed %d, reasons %v, attempts %d; want 50 deadline failures of one attempt each", r.Failed, r.FailuresByReason, r.Attempts)
	}
	if r.ScenarioDurationMs != 30000 {
		t.Errorf("duration %v ms, want 10 rounds of 3 s", r.ScenarioDurationMs)
	}

	// With passive health (the default), the attempts the deadline cut
	// count as failures of the primary: after five of them it is ejected
	// and the other requests start at the fallback.
	r = mustSimulate(t, hang("{}"), Options{}, BaselineNone)
	if r.FailuresByReason["deadline"] != 5 || r.Succeeded != 45 || r.AttemptsByTarget["openai/gpt-4o"] != 5 {
		t.Errorf("succeeded %d, reasons %v, attempts %v; want 5 deadline failures, then the fallback serving the rest", r.Succeeded, r.FailuresByReason, r.AttemptsByTarget)
	}
}

// A same-model retry storm against a provider that always fails stays
// near one attempt per request under the default budget: once passive
// health ejects the target, a request tries it once (an ejection is a
// guess, and same_model has no alternative) and is not let retry it.
func TestSameModelStormBounded(t *testing.T) {
	sc := mustScenario(t, "storm.yaml", doc(
		"config:",
		"  model_providers:",
		"    - model: openai/gpt-4o",
		"      retry_policy: {default_strategy: same_model, default_max_attempts: 4}",
		"workload: {model: openai/gpt-4o, requests: 3000, rate: 100, timeout: 30s}",
		"upstreams:",
		"  openai/gpt-4o:",
		"    phases: [{status: 503, latency: {ttfb: 20ms}}]",
	))
	r := mustSimulate(t, sc, Options{}, BaselineNone)
	t.Logf("%.3f attempts per request", float64(r.Attempts)/float64(r.Requests))
	if a := float64(r.Attempts) / float64(r.Requests); a > 1.3 {
		t.Errorf("%.3f attempts per request, want ≤ 1.3 (%v)", a, r.FailuresByReason)
	}
}

// Without a retry_policy an error answer is delivered as it is.
func TestPassThrough(t *testing.T) {
	sc := mustScenario(t, "pass.yaml", doc(
		"config:",
		"  model_providers: [{model: openai/gpt-4o}, {model: anthropic/claude-3-5-sonnet}]",
		"  engine: {timeouts: {attempt: 1s}}",
		"workload: {model: openai/gpt-4o, requests: 300, rate: 100}",
		"upstreams:",
		"  openai/gpt-4o:",
		"    phases: [{at: 0s, status: 429}, {at: 1s, hang: true}, {at: 2s, reset: true}]",
	))
	r := mustSimulate(t, sc, Options{}, BaselineNone)
	checkInvariants(t, r)
	if r.Succeeded != 0 || r.Attempts != 300 || r.FailuresByReason["upstream_429"] == 0 ||
		r.FailuresByReason["upstream_timeout"] == 0 || r.FailuresByReason["upstream_error"] == 0 {
		t.Errorf("succeeded %d attempts %d reasons %v", r.Succeeded, r.Attempts, r.FailuresByReason)
	}
}

func TestHistQuantiles(t *testing.T) {
	h := newHist(7)
	rng := rand.New(rand.NewPCG(1, 2))
	var vals []int64
	for range 100000 {
		v := int64(rng.ExpFloat64() * float64(time.Second))
		vals = append(vals, v)
		h.add(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := vals[int(q*float64(len(vals)))-1]
		got := h.quantile(q)
		if d := float64(got-exact) / float64(exact); d > 0.01 || d < -0.01 {
			t.Errorf("q%v = %v, exact %v (%.2f%% off)", q, time.Duration(got), time.Duration(exact), 100*d)
		}
	}
	if h.quantile(1) != vals[len(vals)-1] || h.max != vals[len(vals)-1] {
		t.Errorf("max %v, want %v", h.quantile(1), vals[len(vals)-1])
	}
	small := newHist(4)
	small.add(3000) // 3 µs: exact bins
	if got := small.quantile(0.5); got != 3000 {
		t.Errorf("3µs → %v", got)
	}
}

func TestEventHeapOrder(t *testing.T) {
	var h eventHeap
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 1000 {
		h.push(int64(rng.IntN(50)), evEnd, int32(i))
	}
	prev := event{at: -1}
	for h.len() > 0 {
		e := h.pop()
		if e.at < prev.at || (e.at == prev.at && e.seq < prev.seq) {
			t.Fatalf("%+v popped after %+v", e, prev)
		}
		prev = e
	}
}

// Coarsening keeps every count and histogram.
func TestSeriesCoarsen(t *testing.T) {
	s := newSeries(2, int64(time.Millisecond))
	var n int64
	for i := range 5000 {
		off := int64(i) * int64(time.Millisecond) / 2
		b := s.bucket(off)
		s.arrivals[b]++
		s.attempts[b*2+i%2]++
		s.lat[b].add(int64(i) * 1000)
		n++
	}
	if len(s.arrivals) > maxBuckets || s.width == int64(time.Millisecond) {
		t.Fatalf("%d buckets of %v", len(s.arrivals), time.Duration(s.width))
	}
	var arr, att, lat int64
	for b := range s.arrivals {
		arr += s.arrivals[b]
		att += s.attempts[2*b] + s.attempts[2*b+1]
		lat += s.lat[b].n
	}
	if arr != n || att != n || lat != n {
		t.Errorf("after coarsening: %d arrivals, %d attempts, %d latencies; want %d", arr, att, lat, n)
	}
}

// An upstream over its capacity sheds attempts with a quick 503: with 8
// requests in flight and room for 2, six of every eight first attempts are
// shed and fail over; with room for all of them, none is.
func TestCapacity(t *testing.T) {
	run := func(capacity int) *Result {
		sc := mustScenario(t, "capacity.yaml", doc(
			"config:",
			"  model_providers:",
			"    - model: openai/gpt-4o",
			"      retry_policy: {on_status_codes: [{codes: [503], strategy: different_provider, max_attempts: 2}]}",
			"    - model: anthropic/claude-3-5-sonnet",
			"  engine: {retry_budget: {enabled: false}}",
			"workload: {model: openai/gpt-4o, requests: 80, concurrency: 8}",
			"upstreams:",
			"  openai/gpt-4o:",
			"    latency: {ttfb: 100ms, total: 1s}",
			"    capacity: "+strconv.Itoa(capacity),
			"  anthropic/claude-3-5-sonnet:",
			"    latency: {ttfb: 100ms, total: 1s}",
		))
		r := mustSimulate(t, sc, Options{}, BaselineNone)
		checkInvariants(t, r)
		return r
	}
	if r := run(8); r.AttemptsByTarget["anthropic/claude-3-5-sonnet"] != 0 || r.Succeeded != 80 {
		t.Errorf("capacity 8: attempts %v, succeeded %d; want every request served by the primary", r.AttemptsByTarget, r.Succeeded)
	}
	r := run(2)
	if r.Succeeded != 80 || r.ServedByTarget["openai/gpt-4o"] == 0 || r.ServedByTarget["anthropic/claude-3-5-sonnet"] < 40 {
		t.Errorf("capacity 2: served %v, succeeded %d; want most requests shed to the secondary", r.ServedByTarget, r.Succeeded)
	}

	_, err := ParseScenario("bad.yaml", doc(
		"config: {model_providers: [{model: openai/gpt-4o}]}",
		"workload: {model: openai/gpt-4o, requests: 1, rate: 1}",
		"upstreams:",
		"  openai/gpt-4o: {capacity: 0}",
	))
	if err == nil || !strings.Contains(err.Error(), `upstreams["openai/gpt-4o"].capacity`) || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("capacity 0: %v", err)
	}
}
