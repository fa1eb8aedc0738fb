package redishealth

import (
	"testing"
	"time"

	"github.com/reroute-go/reroute/redishealth/redistest"
)

// BenchmarkPropagation measures the propagation delay of facts between two
// replicas on one host through a real redis-server: each iteration
// creates a fact on A (a Retry-After block extended by 1 ms) and waits
// until B has imported it. It reports the receiver's p50 and p99 of the
// delay from the send timestamp in the message (clocks on one host
// agree), over the last up to 4096 facts, as p50-ms and p99-ms; at
// -benchtime 1000x that is 1,000 facts.
//
//	go test -run '^$' -bench Propagation -benchtime 1000x ./redishealth/
func BenchmarkPropagation(b *testing.B) {
	srv := redistest.Start(b)
	a, r := newReplica(b, srv, baseConfig), newReplica(b, srv, baseConfig)
	a.waitConnected(b)
	r.waitConnected(b)
	until := nowNs() + 60*sec
	b.ResetTimer()
	for b.Loop() {
		until += int64(time.Millisecond)
		a.a.ReportRetryAfter(tGPT4o, until)
		select {
		case <-r.applied:
		case <-time.After(15 * time.Second):
			b.Fatal("a fact did not arrive")
		}
	}
	b.StopTimer()
	st := r.s.Stats()
	b.ReportMetric(float64(st.DelayP50)/1e6, "p50-ms")
	b.ReportMetric(float64(st.DelayP99)/1e6, "p99-ms")
	b.ReportMetric(float64(st.DelaySamples), "facts")
}
