package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code = run(ctx, args, &out, &errb, false)
	return code, out.String(), errb.String()
}

func TestDefaultScenario(t *testing.T) {
	code, out, errs := runCmd(t)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, w := range []string{"scenario default: sim mode, seed 7", "succeeded", "attempts by target", "openai/gpt-4o", "latency p50", "blocks seen"} {
		if !strings.Contains(out, w) {
			t.Errorf("summary lacks %q:\n%s", w, out)
		}
	}
	if errs != "" {
		t.Errorf("stderr of a quick sim run off a terminal: %q", errs)
	}
}

func TestOutputs(t *testing.T) {
	dir := t.TempDir()
	js, rep := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	code, out, errs := runCmd(t, "-baseline", "naive", "-baseline", "naive-failover", "-json", js, "-report", rep, "-requests", "4000", "-seed", "9")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !regexp.MustCompile(`\s+reroute\s+naive\s+naive-failover\n`).MatchString(out) {
		t.Errorf("summary has no side-by-side header:\n%s", out)
	}
	data, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if m["requests"].(float64) != 4000 || m["seed"].(float64) != 9 || m["mode"] != "sim" {
		t.Errorf("JSON %v", m)
	}
	// baselines lists them in order; baseline repeats the first.
	bs, _ := m["baselines"].([]any)
	if len(bs) != 2 || bs[0].(map[string]any)["policy"] != "naive" || bs[1].(map[string]any)["policy"] != "naive-failover" {
		t.Errorf("baselines %v", m["baselines"])
	}
	if b, ok := m["baseline"].(map[string]any); !ok || b["policy"] != "naive" || len(bs) == 0 || b["attempts"] != bs[0].(map[string]any)["attempts"] {
		t.Errorf("baseline %v", m["baseline"])
	}
	page, err := os.ReadFile(rep)
	if err != nil {
		t.Fatal(err)
	}
	html := string(page)
	for _, w := range []string{"<!DOCTYPE html>", "<svg", "Requests per second", "Attempts per second by target", "Latency of successful requests", "Upstream behaviour and blocks", "naive: succeeded", "naive-failover: succeeded", "naive-failover: 100"} {
		if !strings.Contains(html, w) {
			t.Errorf("report lacks %q", w)
		}
	}
	// Self-contained: nothing to fetch.
	if refs := regexp.MustCompile(`(src|href)=|url\(|https?://`).FindAllString(strings.ReplaceAll(html, `xmlns="http://www.w3.org/2000/svg"`, ""), -1); len(refs) > 0 {
		t.Errorf("report references %v", refs)
	}
}

// -baseline takes a comma-separated list, may be repeated, keeps the order
// given and drops repeats; none means no baseline.
func TestBaselineFlag(t *testing.T) {
	header := regexp.MustCompile(`(?m)^ +reroute.*$`)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-baseline", "naive-failover,naive"}, "reroute naive-failover naive"},
		{[]string{"-baseline", "naive", "-baseline", "naive,naive-failover"}, "reroute naive naive-failover"},
		{[]string{"-baseline", "none"}, "reroute"},
		{nil, "reroute"},
	} {
		code, out, errs := runCmd(t, append(tt.args, "-requests", "300")...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", tt.args, code, errs)
		}
		if got := strings.Join(strings.Fields(header.FindString(out)), " "); got != tt.want {
			t.Errorf("%v: header %q, want %q", tt.args, got, tt.want)
		}
	}
}

func TestJSONToStdoutAndSample(t *testing.T) {
	code, out, errs := runCmd(t, "-json", "-", "all-blocked")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	i := strings.Index(out, "{")
	var m map[string]any
	if i < 0 || json.Unmarshal([]byte(out[i:]), &m) != nil || m["scenario"] != "all-blocked" {
		t.Fatalf("no JSON after the summary:\n%s", out)
	}
}

func TestList(t *testing.T) {
	code, out, _ := runCmd(t, "-list")
	if code != 0 || !strings.Contains(out, "default\n") || !strings.Contains(out, "retry-storm\n") {
		t.Errorf("exit %d, list:\n%s", code, out)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("config:\n  model_providers: [{model: openai/gpt-4o}]\nworkload: {model: openai/gpt-4o, requests: 5, rate: 1, burst: 3}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.json")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-json", out, bad}, `line 3: workload.burst: unknown key "burst"`},
		{[]string{filepath.Join(dir, "missing.yaml")}, "no such file"},
		{[]string{"-mode", "warp"}, "-mode must be sim or http"},
		{[]string{"-baseline", "smart"}, "-baseline must list naive, naive-failover, no-hedge or none"},
		{[]string{"-baseline", "naive,smart"}, "-baseline must list naive, naive-failover, no-hedge or none"},
		{[]string{"-seed", "x"}, "-seed must be an unsigned integer"},
		{[]string{"-requests", "-3"}, "-requests must be positive"},
		{[]string{"a.yaml", "b.yaml"}, "one scenario at a time"},
		{[]string{"-nope"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCmd(t, tt.args...)
		if code != 2 || !strings.Contains(stderr, tt.want) || stdout != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit 2 and %q", tt.args, code, stderr, stdout, tt.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a bad scenario left an output file: nothing should half-run")
	}
}

func TestHTTPMode(t *testing.T) {
	if testing.Short() {
		t.Skip("real time")
	}
	code, out, errs := runCmd(t, "-mode", "http", "-requests", "300", "healthy")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "http mode") || !regexp.MustCompile(`succeeded\s+300\s+100.00%`).MatchString(out) {
		t.Errorf("summary:\n%s", out)
	}
}

func TestProgressLine(t *testing.T) {
	var b bytes.Buffer
	code := run(context.Background(), []string{"-requests", "1000"}, &bytes.Buffer{}, &b, true)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, b.String())
	}
	if s := b.String(); !strings.HasPrefix(s, "\r\x1b[K") || !strings.HasSuffix(s, "\n") || !strings.Contains(s, "1000/1000 done") {
		t.Errorf("terminal progress %q", s)
	}
}

// -replicas with -share-delay shows the shared replicas and the same
// replicas alone side by side.
func TestReplicasFlags(t *testing.T) {
	code, out, errs := runCmd(t, "-quiet", "-requests", "1000", "-replicas", "8", "-share-delay", "5ms", "fast-outage")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "reroute ×8 shared 5ms") || !strings.Contains(out, "reroute ×8 alone") {
		t.Fatalf("summary:\n%s", out)
	}
	for _, args := range [][]string{
		{"-replicas", "0"},
		{"-share-delay", "5ms"}, // one replica
		{"-replicas", "2", "-share-delay", "soon"},
		{"-replicas", "2", "-share-delay", "-1s"},
		{"-replicas", "2", "-mode", "http"},
		{"-replicas", "2", "-share-delay", "1ms", "-probe-lock-ttl", "-1s"},
	} {
		if code, _, _ := runCmd(t, append([]string{"-quiet"}, args...)...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}
