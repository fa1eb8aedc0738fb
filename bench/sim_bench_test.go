package bench

import (
	"testing"
)

// BenchmarkSimulate measures the simulator on the built-in default
// scenario (40,000 requests over 100 s of scenario time, with a rate-limit
// window and a brownout): ns/op is one whole run; the req/s metric is
// simulated requests per wall-clock second, and allocs/req what each
// request costs in allocations.
func BenchmarkSimulate(b *testing.B) {
	sc := mustScenario(b, "default.yaml", DefaultScenario())
	for _, bc := range []struct {
		name     string
		baseline string
	}{{"reroute", BaselineNone}, {"naive", BaselineNaive}, {"naive-failover", BaselineNaiveFailover}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var reqs int64
			for b.Loop() {
				r := mustSimulate(b, sc, Options{}, bc.baseline)
				reqs += r.Requests
			}
			b.ReportMetric(float64(reqs)/b.Elapsed().Seconds(), "req/s")
			b.ReportMetric(float64(testing.AllocsPerRun(1, func() { mustSimulate(b, sc, Options{}, bc.baseline) }))/float64(sc.Workload.Requests), "allocs/req")
		})
	}
}

// BenchmarkHTTPMode measures the HTTP mode on the healthy sample: every
// request through the HTTP adapter to a loopback upstream answering in
// 1-2 ms, 64 in flight. The req/s metric is requests per second of the
// runs' load phase (the servers' start and shutdown left out).
func BenchmarkHTTPMode(b *testing.B) {
	sc := mustSample(b, "healthy.yaml")
	var reqs int64
	var wall float64
	for b.Loop() {
		r, err := RunHTTP(b.Context(), sc, Options{Requests: 5000}, BaselineNone)
		if err != nil {
			b.Fatal(err)
		}
		if r.Succeeded != r.Requests {
			b.Fatalf("%d of %d succeeded: %v", r.Succeeded, r.Requests, r.FailuresByReason)
		}
		reqs += r.Requests
		wall += r.Wall.DurationMs / 1000
	}
	b.ReportMetric(float64(reqs)/wall, "req/s")
}
