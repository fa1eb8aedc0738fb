package bench

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/reroute-go/reroute/internal/yamlkeys"
)

// Problem is one thing wrong with a scenario file: where it is (field path
// and 1-based line) and what is wrong.
type Problem struct {
	Path    string // e.g. `upstreams["openai/gpt-4o"].phases[1].share`
	Line    int    // 0 when unknown
	Message string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

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

// strict checks every mapping key of a YAML tree against the yaml tags of
// the Go type it will be decoded into, so that an unknown key is an error
// naming its path and line (yaml.v3's KnownFields names only the line), and
// remembers the path written on each line to attach paths to yaml.v3's type
// errors, which name only a line.
type strict struct {
	probs  []Problem
	lines  map[string]int     // path → line
	byLine map[int][]scalarAt // line → the paths of the values written on it
}

type scalarAt struct{ path, value string }

func newStrict() *strict {
	return &strict{lines: map[string]int{}, byLine: map[int][]scalarAt{}}
}

var (
	nodeType        = reflect.TypeOf(yaml.Node{})
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

func (s *strict) add(path string, line int, format string, args ...any) {
	s.probs = append(s.probs, Problem{Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
}

// line returns the line of path, or of its nearest enclosing path that
// was written.
func (s *strict) line(path string) int { return yamlkeys.Line(s.lines, path) }

func (s *strict) mark(line int, path string) {
	if _, ok := s.lines[path]; !ok {
		s.lines[path] = line
	}
}

// pathOn names the field a type error on line is about. yaml.v3 gives a
// line but no column, and a flow mapping puts several fields on one line:
// the field whose value the message quotes, if exactly one matches, else
// the nearest path enclosing every value on the line.
func (s *strict) pathOn(line int, msg string) string {
	at := s.byLine[line]
	var hit []string
	for _, a := range at {
		if strings.Contains(msg, "`"+a.value+"`") || strings.Contains(msg, strconv.Quote(a.value)) {
			hit = append(hit, a.path)
		}
	}
	if len(hit) == 1 {
		return hit[0]
	}
	common := ""
	for i, a := range at {
		if i == 0 {
			common = a.path
			continue
		}
		common = yamlkeys.Common(common, a.path)
	}
	return common
}

func (s *strict) walk(n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && path != "" {
		s.byLine[n.Line] = append(s.byLine[n.Line], scalarAt{path, n.Value})
	}
	if t == nodeType || reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			s.add(path, n.Line, "expected a mapping, found %s", kindName(n))
			return
		}
		fields := yamlkeys.Fields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := yamlkeys.Join(path, k.Value)
			f, ok := fields[k.Value]
			if !ok {
				s.add(p, k.Line, "%s", yamlkeys.Unknown(k.Value, fields))
				continue
			}
			s.mark(k.Line, p)
			s.walk(v, f, p)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			if n.Tag != "!!null" {
				s.add(path, n.Line, "expected a mapping, found %s", kindName(n))
			}
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := path + "[" + strconv.Quote(k.Value) + "]"
			s.mark(k.Line, p)
			s.walk(v, t.Elem(), p)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			if n.Tag != "!!null" {
				s.add(path, n.Line, "expected a list, found %s", kindName(n))
			}
			return
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			s.mark(item.Line, p)
			s.walk(item, t.Elem(), p)
		}
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	if n.Tag == "!!null" {
		return "nothing"
	}
	return fmt.Sprintf("the value %q", n.Value)
}

var lineMsg = regexp.MustCompile(`^line (\d+): (.*)$`)

// typeErrors turns yaml.v3's "line N: cannot unmarshal …" messages into
// problems that name the path written on that line.
func (s *strict) typeErrors(te *yaml.TypeError) {
	for _, msg := range te.Errors {
		m := lineMsg.FindStringSubmatch(msg)
		if m == nil {
			s.probs = append(s.probs, Problem{Message: msg})
			continue
		}
		line, _ := strconv.Atoi(m[1])
		if s.reported(line) {
			continue // the walk already said what is wrong there
		}
		text := strings.NewReplacer("policy.", "", "bench.", "").Replace(m[2])
		s.probs = append(s.probs, Problem{Path: s.pathOn(line, text), Line: line, Message: text})
	}
}

func (s *strict) reported(line int) bool {
	for _, p := range s.probs {
		if p.Line == line {
			return true
		}
	}
	return false
}
