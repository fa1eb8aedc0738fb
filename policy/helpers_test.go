package policy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// rp is the field path of the primary's retry_policy in configurations
// built by withPolicy.
const rp = "model_providers[0].retry_policy"

// withPolicy returns a configuration whose primary openai/gpt-4o carries the
// given retry_policy body (block YAML without indentation; a leading newline
// is dropped), followed by openai/gpt-4o-mini and anthropic/claude-3-5-sonnet
// so that every strategy has a target. The body's first line is line 4.
func withPolicy(body string) string {
	body = strings.TrimPrefix(body, "\n")
	var b strings.Builder
	b.WriteString("model_providers:\n  - model: openai/gpt-4o\n    retry_policy:\n")
	for _, l := range strings.Split(body, "\n") {
		b.WriteString("      " + l + "\n")
	}
	b.WriteString("  - model: openai/gpt-4o-mini\n  - model: anthropic/claude-3-5-sonnet\n    provider_interface: anthropic\n")
	return b.String()
}

func ip(v int) *int { return &v }

func jp(j Jitter) *Jitter { return &j }

func dp(d Duration) *Duration { return &d }

// mustParse parses src and fails the test on an error.
func mustParse(t testing.TB, src string) (*Config, []Warning) {
	t.Helper()
	cfg, warns, err := Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v\nsource:\n%s", err, src)
	}
	return cfg, warns
}

// parseError parses src, which must fail, and returns its problems.
func parseError(t testing.TB, src string) []Problem {
	t.Helper()
	cfg, _, err := Parse([]byte(src))
	if err == nil {
		t.Fatalf("Parse accepted an invalid configuration:\n%s", src)
	}
	if cfg != nil {
		t.Errorf("Parse returned a configuration together with an error")
	}
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("error %T is not a *policy.Error: %v", err, err)
	}
	if len(perr.Problems) == 0 {
		t.Fatalf("*Error without problems")
	}
	return perr.Problems
}

// want is an expected problem: the exact field path, the line when not 0,
// and a substring of the message.
type want struct {
	path string
	line int
	msg  string
}

func (w want) String() string { return fmt.Sprintf("line %d: %s: …%s…", w.line, w.path, w.msg) }

// checkProblems fails unless got holds exactly the wanted problems, in any
// order.
func checkProblems(t testing.TB, kind string, got []Problem, wants []want) {
	t.Helper()
	used := make([]bool, len(got))
	ok := len(got) == len(wants)
	for _, w := range wants {
		found := false
		for i, p := range got {
			if used[i] || p.Path != w.path || (w.line != 0 && p.Line != w.line) || !strings.Contains(p.Message, w.msg) {
				continue
			}
			used[i], found = true, true
			break
		}
		ok = ok && found
	}
	if ok {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: got %d, want %d\n got:", kind, len(got), len(wants))
	for _, p := range got {
		fmt.Fprintf(&b, "\n  %s", p)
	}
	b.WriteString("\n want:")
	for _, w := range wants {
		fmt.Fprintf(&b, "\n  %s", w)
	}
	t.Error(b.String())
}

// yamlOf renders v for failure messages: pointers are followed, which %+v
// does not do.
func yamlOf(v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}
