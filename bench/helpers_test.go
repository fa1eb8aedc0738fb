package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// mustScenario parses a scenario or fails the test.
func mustScenario(t testing.TB, name string, data []byte) *Scenario {
	t.Helper()
	sc, err := ParseScenario(name, data)
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return sc
}

func mustSample(t testing.TB, name string) *Scenario {
	t.Helper()
	data, err := SampleScenario(name)
	if err != nil {
		t.Fatal(err)
	}
	return mustScenario(t, name, data)
}

func mustSimulate(t testing.TB, sc *Scenario, o Options, baseline string) *Result {
	t.Helper()
	r, err := Simulate(sc, o, baseline)
	if err != nil {
		t.Fatalf("simulate %s: %v", sc.Name, err)
	}
	return r
}

// jsonWithoutWall renders r as JSON with its wall sections zeroed.
func jsonWithoutWall(t testing.TB, r *Result) []byte {
	t.Helper()
	c := *r
	c.Wall = Wall{}
	c.Baselines = nil
	for _, x := range r.Baselines {
		b := *x
		b.Wall = Wall{}
		c.Baselines = append(c.Baselines, &b)
	}
	var buf bytes.Buffer
	if err := c.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// window sums the attempts per target over the series buckets that lie
// wholly within [from, to) of scenario time.
func window(r *Result, from, to time.Duration) map[string]int64 {
	s := r.series
	out := map[string]int64{}
	for b := range s.arrivals {
		lo, hi := int64(b)*s.width, int64(b+1)*s.width
		if lo < int64(from) || hi > int64(to) {
			continue
		}
		for t, name := range r.scenario.Targets {
			out[name] += s.attempts[b*s.nt+t]
		}
	}
	return out
}

// doc joins lines, so tests can write scenarios with exact line numbers.
func doc(lines ...string) []byte { return []byte(strings.Join(lines, "\n") + "\n") }

func decodeJSON(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("JSON: %v\n%s", err, b)
	}
	return m
}
