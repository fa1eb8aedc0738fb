// Package layering holds a test that keeps the module's import graph
// pointing one way: each package may import, from this module, only the
// packages listed for it in rules. docs/architecture.md states the same
// table in prose.
package layering

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/reroute-go/reroute"

// anything allows every package of the module.
var anything = []string{"..."}

// rules lists, for each package of the module (paths relative to the
// module; "x/..." is x and everything below it, "..." is every package),
// the packages of the module it may import. The standard library and other
// modules are not this test's concern. The most specific matching pattern
// decides (an exact path beats "x/...", a longer prefix beats a shorter),
// and a package that matches no pattern is an error, so a new package has
// to take its place here.
var rules = []struct {
	pkg string
	may []string
}{
	{"internal/...", []string{"internal/..."}},
	{"policy", []string{"internal/yamlkeys"}},
	{"health", []string{"policy", "internal/actor"}},
	{"engine", []string{"policy", "health"}},
	{"engine/httpproxy", []string{"engine", "policy", "health"}},
	// prom is the one package that imports the Prometheus client; the core
	// above must not depend on it (TestCoreWithoutPrometheus), so it sits
	// beside them, importing downward.
	{"prom", []string{"engine", "health", "policy"}},
	// otelreroute is the one package that imports OpenTelemetry (its API;
	// the SDK only in tests and cmd/gateway), beside prom and for the same
	// reason (TestCoreWithoutOpenTelemetry). It imports engine/httpproxy
	// only in its tests, which trace requests through the real handler: a
	// host that calls engine.Do itself links no HTTP adapter.
	{"otelreroute", []string{"engine", "engine/httpproxy", "health", "policy"}},
	// redishealth is the one package that imports go-redis
	// (TestCoreWithoutRedis): it shares the health actor's facts between
	// replicas, attached to the engine from outside. redistest, which
	// starts a redis-server for tests, imports nothing of the module.
	{"redishealth", []string{"engine", "health", "policy", "redishealth/redistest"}},
	{"redishealth/redistest", nil},
	{"bench", []string{"engine", "engine/httpproxy", "health", "policy", "internal/..."}},
	{"bench/cmd/...", anything},
	{"cmd/...", anything},
}

// match reports whether the relative path p matches pattern pat, and how
// specific the match is (higher is more specific; 0 is no match).
func match(pat, p string) int {
	switch {
	case pat == "...":
		return 1
	case strings.HasSuffix(pat, "/..."):
		base := strings.TrimSuffix(pat, "/...")
		if p == base || strings.HasPrefix(p, base+"/") {
			return 2 + len(base)
		}
		return 0
	case pat == p:
		return 1 << 20
	}
	return 0
}

// allowed returns the may list of the most specific rule for p, and false
// when no rule matches.
func allowed(p string) ([]string, bool) {
	best, score := []string(nil), 0
	for _, r := range rules {
		if s := match(r.pkg, p); s > score {
			best, score = r.may, s
		}
	}
	return best, score > 0
}

// violations checks an import graph (import path → import paths, as go
// list prints them) against rules and returns one line per problem, sorted.
// A package's imports of itself (an external test package importing the
// package under test) are fine.
func violations(graph map[string][]string) []string {
	var out []string
	for pkg, imports := range graph {
		rel, ok := relative(pkg)
		if !ok {
			continue
		}
		may, ok := allowed(rel)
		if !ok {
			out = append(out, rel+": no rule in the layering table")
			continue
		}
		for _, imp := range imports {
			irel, ok := relative(imp)
			if !ok || irel == rel {
				continue
			}
			if !slices.ContainsFunc(may, func(pat string) bool { return match(pat, irel) > 0 }) {
				out = append(out, rel+" imports "+irel+": allowed are "+strings.Join(may, ", "))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// relative returns p relative to the module ("" for the module's root
// package), and false when p is not in the module.
func relative(p string) (string, bool) {
	if p == module {
		return "", true
	}
	if rest, ok := strings.CutPrefix(p, module+"/"); ok {
		return rest, true
	}
	return "", false
}

func TestImportDirection(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH:", err)
	}
	// Test imports count too: a test that reaches upward is the first step
	// towards a cycle.
	cmd := exec.Command(goTool, "list", "-f",
		`{{.ImportPath}}|{{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}`,
		module+"/...")
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	graph := map[string][]string{}
	for line := range strings.Lines(strings.TrimSpace(string(out))) {
		pkg, imports, ok := strings.Cut(strings.TrimSpace(line), "|")
		if !ok {
			t.Fatalf("go list printed %q", line)
		}
		graph[pkg] = strings.Fields(imports)
	}
	for _, want := range []string{"policy", "health", "engine", "internal/actor"} {
		if _, ok := graph[module+"/"+want]; !ok {
			t.Fatalf("go list did not list %s; got %d packages", want, len(graph))
		}
	}
	for _, v := range violations(graph) {
		t.Error(v)
	}
}

// core are the packages an embedding host always links: none of them may
// depend, even indirectly, on a metrics client. Exporting metrics is the
// host's choice, made by importing prom.
var core = []string{"policy", "health", "engine", "engine/httpproxy"}

func TestCoreWithoutPrometheus(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH:", err)
	}
	args := []string{"list", "-deps", "-f", "{{.ImportPath}}"}
	for _, p := range core {
		args = append(args, module+"/"+p)
	}
	out, err := exec.Command(goTool, args...).Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	n := 0
	for dep := range strings.Lines(string(out)) {
		dep = strings.TrimSpace(dep)
		n++
		if strings.HasPrefix(dep, "github.com/prometheus/") || dep == module+"/prom" {
			t.Errorf("a core package depends on %s", dep)
		}
	}
	if n < len(core) {
		t.Fatalf("go list -deps listed %d packages", n)
	}
}

// TestCoreWithoutOpenTelemetry is TestCoreWithoutPrometheus for tracing:
// the core knows a tracer only through the HTTP adapter's generic options
// (WithRequestTracer, WithCallWrapper, WithHeaderInjector), and tracing
// with OpenTelemetry is the host's choice, made by importing otelreroute.
// It also checks that otelreroute itself, outside its tests, does not
// link the HTTP adapter or the OpenTelemetry SDK.
func TestCoreWithoutOpenTelemetry(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH:", err)
	}
	deps := func(pkgs ...string) []string {
		t.Helper()
		args := []string{"list", "-deps", "-f", "{{.ImportPath}}"}
		for _, p := range pkgs {
			args = append(args, module+"/"+p)
		}
		out, err := exec.Command(goTool, args...).Output()
		if err != nil {
			t.Fatalf("go list -deps: %v", err)
		}
		var list []string
		for dep := range strings.Lines(string(out)) {
			list = append(list, strings.TrimSpace(dep))
		}
		if len(list) < len(pkgs) {
			t.Fatalf("go list -deps listed %d packages", len(list))
		}
		return list
	}
	for _, dep := range deps(core...) {
		if strings.HasPrefix(dep, "go.opentelemetry.io/") || dep == module+"/otelreroute" {
			t.Errorf("a core package depends on %s", dep)
		}
	}
	api := false
	for _, dep := range deps("otelreroute") {
		api = api || dep == "go.opentelemetry.io/otel/trace"
		if strings.HasPrefix(dep, "go.opentelemetry.io/otel/sdk") || strings.HasPrefix(dep, "go.opentelemetry.io/otel/exporters") || dep == module+"/engine/httpproxy" {
			t.Errorf("otelreroute depends on %s", dep)
		}
	}
	if !api {
		t.Error("otelreroute does not depend on go.opentelemetry.io/otel/trace: is the list right?")
	}
}

// TestCoreWithoutRedis: sharing health between replicas is the host's
// choice, made by importing redishealth; no core package links go-redis.
func TestCoreWithoutRedis(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH:", err)
	}
	args := []string{"list", "-deps", "-f", "{{.ImportPath}}"}
	for _, p := range core {
		args = append(args, module+"/"+p)
	}
	out, err := exec.Command(goTool, args...).Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	n := 0
	for dep := range strings.Lines(string(out)) {
		dep = strings.TrimSpace(dep)
		n++
		if strings.HasPrefix(dep, "github.com/redis/") || strings.HasPrefix(dep, module+"/redishealth") {
			t.Errorf("a core package depends on %s", dep)
		}
	}
	if n < len(core) {
		t.Fatalf("go list -deps listed %d packages", n)
	}
	// And redishealth does link it: the check above looks for the right
	// name.
	out, err = exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}", module+"/redishealth").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	if !strings.Contains(string(out), "github.com/redis/go-redis/v9\n") {
		t.Error("redishealth does not depend on github.com/redis/go-redis/v9: is the check right?")
	}
}

// TestViolationsCatchesUpwardImports runs the checker on a made-up graph,
// so that a checker that accepts everything cannot pass unnoticed.
func TestViolationsCatchesUpwardImports(t *testing.T) {
	m := func(p string) string { return module + "/" + p }
	graph := map[string][]string{
		m("policy"):           {"fmt", m("internal/yamlkeys"), m("health")}, // upward
		m("health"):           {m("policy"), m("internal/actor"), "go.uber.org/zap"},
		m("health_test"):      {m("health")},                                     // not in the module's tree: no rule
		m("internal/actor"):   {"sync", m("policy")},                             // internal may not import policy
		m("engine"):           {m("health"), m("policy"), m("engine/httpproxy")}, // upward
		m("engine/httpproxy"): {m("engine"), m("engine/httpproxy")},              // itself: fine
		m("cmd/gateway"):      {m("engine"), m("bench"), m("internal/actor")},
		m("bench/cmd/x"):      {m("bench")},
		m("newpkg"):           {"fmt"},            // no rule
		"example.com/other":   {m("cmd/gateway")}, // not ours: ignored
	}
	got := violations(graph)
	want := []string{
		"engine imports engine/httpproxy: allowed are policy, health",
		"health_test: no rule in the layering table",
		"internal/actor imports policy: allowed are internal/...",
		"newpkg: no rule in the layering table",
		"policy imports health: allowed are internal/yamlkeys",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestAllowedMostSpecificWins(t *testing.T) {
	for p, want := range map[string]string{
		"bench":                "engine",
		"bench/cmd/benchtable": "...",
		"cmd/loadgen":          "...",
		"internal/actor":       "internal/...",
		"engine/httpproxy":     "engine",
		"prom":                 "engine",
		"otelreroute":          "engine",
	} {
		may, ok := allowed(p)
		if !ok || may[0] != want {
			t.Errorf("allowed(%q) = %v, %v; want first %q", p, may, ok, want)
		}
	}
	if _, ok := allowed("enginex"); ok {
		t.Error(`"enginex" must not match the rule for "engine"`)
	}
}
