package main

import (
	"strings"
	"testing"
)

func TestTableTakesMedians(t *testing.T) {
	in := `goos: linux
pkg: github.com/reroute-go/reroute/engine
BenchmarkDoSuccess/single-2   	16000000	        74.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkDoSuccess/single-2   	16000000	        90.0 ns/op	       0 B/op	       0 allocs/op
BenchmarkDoSuccess/single-2   	16000000	        72.0 ns/op	       0 B/op	       0 allocs/op
pkg: github.com/reroute-go/reroute/policy
BenchmarkResolve/listed-2     	1000000000	         1.25 ns/op	       8 B/op	       1 allocs/op
PASS
`
	var out strings.Builder
	if err := table(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", out.String())
	}
	if f := strings.Fields(lines[1]); f[0] != "engine" || f[2] != "3" || f[3] != "74.00" {
		t.Errorf("engine row = %q, want 3 runs with median 74.00", lines[1])
	}
	if f := strings.Fields(lines[2]); f[0] != "policy" || f[3] != "1.25" || f[4] != "8" || f[5] != "1" {
		t.Errorf("policy row = %q", lines[2])
	}
	if err := table(strings.NewReader("PASS\n"), &out); err == nil {
		t.Error("input without rows accepted")
	}
}
