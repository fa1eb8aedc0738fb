package bench

import (
	"context"
	"testing"
	"time"
)

// The outage samples, measured where the summary cannot show it: how many
// attempts a target received while it was down, and when the primary took
// the traffic back after it recovered. docs/loadgen.md quotes the figures
// this test logs (go test -run TestOutageWindows -v ./bench/).
func TestOutageWindows(t *testing.T) {
	const gpt, claude = "openai/gpt-4o", "anthropic/claude-3-5-sonnet"
	type down struct {
		target   string
		from, to time.Duration
	}
	for _, tt := range []struct {
		name string
		down []down
	}{
		{"primary-outage.yaml", []down{{gpt, 15 * time.Second, 45 * time.Second}}},
		{"fast-outage.yaml", []down{{gpt, 10 * time.Second, 40 * time.Second}}},
		{"fast-outage-stream.yaml", []down{{gpt, 10 * time.Second, 40 * time.Second}}},
		{"cascade.yaml", []down{{gpt, 10 * time.Second, 40 * time.Second}, {claude, 25 * time.Second, 55 * time.Second}}},
		{"flap.yaml", []down{{gpt, 10 * time.Second, 70 * time.Second}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Run(context.Background(), mustSample(t, tt.name), ModeSim, Baselines, Options{})
			if err != nil {
				t.Fatal(err)
			}
			fo := r.Baselines[1]
			s := r.series
			for _, d := range tt.down {
				// window counts whole buckets only: say which stretch it covered.
				lo := (int64(d.from) + s.width - 1) / s.width * s.width
				hi := int64(d.to) / s.width * s.width
				var arrived int64
				for b := lo / s.width; b < hi/s.width; b++ {
					arrived += s.arrivals[b]
				}
				got, want := window(r, d.from, d.to)[d.target], window(fo, d.from, d.to)[d.target]
				var ejected, ejectedUntil int64 = -1, 0
				for _, b := range r.Blocks {
					if b.ID == d.target && b.Kind == "ejected" {
						if ejected < 0 {
							ejected = int64(b.FromMs * 1e6)
						}
						ejectedUntil = max(ejectedUntil, int64(b.ToMs*1e6))
					}
				}
				if ejected < 0 {
					t.Fatalf("%s never ejected: %v", d.target, r.Blocks)
				}
				// After the first ejection is seen (a hang's first failure
				// comes an attempt timeout late), the target is tried about
				// once per ejection, where naive-failover tries it three
				// times per request.
				since := time.Duration(ejected)
				after := window(r, since, d.to)[d.target]
				t.Logf("%s down %v-%v (buckets of %v covering %v-%v, %d arrivals): attempts to it: reroute %d (%d from its first ejection, seen at %v), naive-failover %d; last ejection ends at %v",
					d.target, d.from, d.to, time.Duration(s.width), time.Duration(lo), time.Duration(hi), arrived, got, after, since, want, time.Duration(ejectedUntil).Round(time.Millisecond))
				atMost(t, "attempts to the target from its first ejection to its recovery, per second", float64(after)/(d.to-since).Seconds(), 2)
			}
			// The primary takes the traffic back: the first whole second
			// after its recovery in which it gets 90 % of the attempts
			// (recoveredAt, as TestSamplesBehave measures it).
			d := tt.down[0]
			back := recoveredAt(r, gpt, d.to)
			t.Logf("the primary, healthy again at %v, first gets 90 %% of a second's attempts in the second from %v", d.to, back)
			// At worst a probe has just failed when it recovers: it is then
			// ejected for up to max_cooldown (30 s by default).
			atMost(t, "seconds from recovery to the primary serving", (back - d.to).Seconds(), 31)
		})
	}
}
