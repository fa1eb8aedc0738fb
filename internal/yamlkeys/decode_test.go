package yamlkeys

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

type code int

// UnmarshalYAML accepts only integers 100-599 and 0 (its zero value), like
// a type with its own rules.
func (c *code) UnmarshalYAML(n *yaml.Node) error {
	var v int
	if err := n.Decode(&v); err != nil || (v != 0 && (v < 100 || v > 599)) {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a status code", n.Line, n.Value)}}
	}
	*c = code(v)
	return nil
}

type rule struct {
	Codes []code `yaml:"codes"`
	Max   *int   `yaml:"max_attempts"`
}

type doc struct {
	Name    string           `yaml:"name"`
	Count   int              `yaml:"count"`
	Seed    uint64           `yaml:"seed"`
	Rules   []rule           `yaml:"rules"`
	Names   []string         `yaml:"names"`
	Targets map[string]*rule `yaml:"targets"`
	Raw     yaml.Node        `yaml:"raw"`
}

func parse(t *testing.T, src string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	return &n
}

func render(probs []Problem) string {
	var b strings.Builder
	for _, p := range probs {
		fmt.Fprintf(&b, "%d %s: %s\n", p.Line, p.Path, p.Message)
	}
	return b.String()
}

// TestDecodeEveryProblem: every bad value is reported with its exact path,
// flow collections included, and none hides another.
func TestDecodeEveryProblem(t *testing.T) {
	src := `name: [a]
count: 2.5
seed: -1
rules:
  - {codes: [429, x, 600, [500]], max_attempts: two}
  - 5
  - codes:
      - 503
      - 0x1AD # hexadecimal 429 in YAML 1.2
    max_attemps: 3
names: [a, {b: c}, d]
targets:
  openai/gpt-4o: {codes: [1]}
  openai/gpt-4o: {}
  "a.b": [x]
raw: {anything: [goes]}
count: 3
`
	var d doc
	lines, probs, err := Decode(parse(t, src), &d)
	if err != nil {
		t.Fatal(err)
	}
	want := "1 name: cannot unmarshal !!seq into string\n" +
		"2 count: 2.5 is not a whole number\n" +
		"3 seed: cannot unmarshal !!int `-1` into uint64\n" +
		"5 rules[0].codes[1]: \"x\" is not a status code\n" +
		"5 rules[0].codes[2]: \"600\" is not a status code\n" +
		"5 rules[0].codes[3]: \"\" is not a status code\n" +
		"5 rules[0].max_attempts: cannot unmarshal !!str `two` into int\n" +
		"6 rules[1]: expected a mapping, found the value \"5\"\n" +
		"10 rules[2].max_attemps: unknown key \"max_attemps\" (did you mean \"max_attempts\"?)\n" +
		"11 names[1]: cannot unmarshal !!map into string\n" +
		"13 targets[\"openai/gpt-4o\"].codes[0]: \"1\" is not a status code\n" +
		"14 targets[\"openai/gpt-4o\"]: mapping key \"openai/gpt-4o\" already defined at line 13\n" +
		"15 targets[\"a.b\"]: expected a mapping, found a list\n" +
		"17 count: mapping key \"count\" already defined at line 2\n"
	if got := render(probs); got != want {
		t.Errorf("problems:\n%s\nwant:\n%s", got, want)
	}
	// The good values are decoded; every list keeps its length, so each
	// index still names what the document has there.
	if len(d.Rules) != 3 || !reflect.DeepEqual(d.Rules[0].Codes, []code{429, 0, 0, 0}) ||
		!reflect.DeepEqual(d.Rules[2].Codes, []code{503, 429}) || d.Rules[1].Codes != nil {
		t.Errorf("rules %+v", d.Rules)
	}
	if !reflect.DeepEqual(d.Names, []string{"a", "", "d"}) || d.Count != 0 || d.Name != "" {
		t.Errorf("names %q, count %d, name %q", d.Names, d.Count, d.Name)
	}
	if d.Raw.Kind != yaml.MappingNode || d.Raw.Line != 16 {
		t.Errorf("raw node %+v", d.Raw)
	}
	for path, line := range map[string]int{"rules[0]": 5, "rules[2].codes[1]": 9, "rules[1]": 6, `targets["a.b"]`: 15, "raw": 16, "rules[2].max_attemps": 10} {
		if got := lines.Line(path); got != line {
			t.Errorf("line of %s = %d, want %d", path, got, line)
		}
	}
}

// TestDecodeClean: a good document decodes as yaml.v3 would, aliases
// included, and the node is not modified.
func TestDecodeClean(t *testing.T) {
	src := `name: x
count: 1e3
rules:
  - &r {codes: [429], max_attempts: 2}
  - *r
targets:
  a/b: *r
  c/d:
`
	n := parse(t, src)
	before, _ := yaml.Marshal(n)
	var d, plain doc
	_, probs, err := Decode(n, &d)
	if err != nil || len(probs) != 0 {
		t.Fatalf("Decode: %v %v", probs, err)
	}
	if err := n.Decode(&plain); err != nil {
		t.Fatal(err)
	}
	d.Raw, plain.Raw = yaml.Node{}, yaml.Node{}
	if !reflect.DeepEqual(d, plain) || d.Count != 1000 || len(d.Targets) != 2 {
		t.Errorf("decoded %+v, yaml.v3 decodes %+v", d, plain)
	}
	if after, _ := yaml.Marshal(n); string(after) != string(before) {
		t.Errorf("the node was modified:\n%s", after)
	}
}

// TestDecodeBadAliasedValue: an anchored value is checked for the type of
// each place that uses it, and cleaned only where it is bad.
func TestDecodeBadAliasedValue(t *testing.T) {
	src := `name: &v "700"
names: [*v]
rules: [{codes: [*v]}]
`
	n := parse(t, src)
	var d doc
	_, probs, err := Decode(n, &d)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := render(probs), "1 rules[0].codes[0]: \"700\" is not a status code\n"; got != want {
		t.Errorf("problems:\n%s\nwant:\n%s", got, want)
	}
	if d.Name != "700" || len(d.Names) != 1 || d.Names[0] != "700" || len(d.Rules[0].Codes) != 1 {
		t.Errorf("decoded %+v", d)
	}
}

type tree []tree

// TestDecodeAliasBomb: anchors that alias each other expand exponentially;
// Decode stops at MaxNodes instead of walking them all.
func TestDecodeAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [[], [], [], [], [], [], [], [], [], []]\n")
	for i := 1; i < 9; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [", i, i)
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "*a%d", i-1)
		}
		b.WriteString("]\n")
	}
	b.WriteString("names: *a8\n")
	n := parse(t, b.String())
	var out map[string]tree
	_, _, err := Decode(n, &out)
	if err == nil || !strings.Contains(err.Error(), "aliases") {
		t.Errorf("Decode of 10^9 values: %v", err)
	}
}
