package bench

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/reroute-go/reroute/internal/yamlkeys"
	"github.com/reroute-go/reroute/policy"
)

// Problem is one thing wrong with a scenario file: where it is (field path,
// e.g. `upstreams["openai/gpt-4o"].phases[1].share`, and 1-based line) and
// what is wrong. It is policy.Problem, so that a scenario's problems and
// those of the configuration inside it read the same; Model is set only on
// the configuration's.
type Problem = policy.Problem

// ScenarioError lists every problem of a scenario file. ParseScenario and
// LoadScenario return it; nothing runs from a scenario with problems.
type ScenarioError struct {
	File     string // the file name, or "" for bytes without one
	Problems []Problem
}

func (e *ScenarioError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "invalid scenario (%d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteString("s")
	}
	b.WriteString("):")
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// strict collects the problems of one scenario file: those of decoding it
// strictly (yamlkeys.Decode: unknown keys, values of the wrong type), then
// those the checks of the decoded values add, each with the line of its
// path.
type strict struct {
	probs []Problem
	lines yamlkeys.Lines
}

// decode decodes doc strictly into out.
func (s *strict) decode(doc *yaml.Node, out any) error {
	lines, probs, err := yamlkeys.Decode(doc, out)
	s.lines = lines
	for _, p := range probs {
		s.probs = append(s.probs, Problem{Path: p.Path, Line: p.Line, Message: p.Message})
	}
	return err
}

func (s *strict) add(path string, line int, format string, args ...any) {
	s.probs = append(s.probs, Problem{Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
}

// line returns the line of path, or of its nearest enclosing path that
// was written.
func (s *strict) line(path string) int { return s.lines.Line(path) }
