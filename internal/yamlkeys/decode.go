package yamlkeys

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a YAML document: the field path it is
// about ("" for the whole document), its 1-based line (0 when unknown) and
// what is wrong. Callers turn it into their own problem type; policy.Problem
// is the one users see.
type Problem struct {
	Path    string
	Line    int
	Message string
}

// Lines maps the field paths of a document to the lines they are written
// on: a mapping key's line for a field, an item's own line for a list item.
type Lines map[string]int

// Line returns the line of path, or of its nearest enclosing path: a key
// left out (a required one, or one a default filled) has no line of its
// own, so the enclosing key's line is the best to point at. 0 when none is
// recorded, and for a nil Lines (a configuration built in Go).
func (l Lines) Line(path string) int {
	for path != "" {
		if n, ok := l[path]; ok {
			return n
		}
		i := lastSep(path)
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

// lastSep returns the index of the "." or "[" that starts the last element
// of path, or -1. A "." or "[" inside a quoted map key does not count:
// upstreams["a.b"] is one element.
func lastSep(path string) int {
	last, quoted := -1, false
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && (c == '.' || c == '['):
			last = i
		}
	}
	return last
}

// Index returns the path of item i of the list at path.
func Index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// Key returns the path of the value of key in the map at path: the key is
// quoted, so that a key holding "." or "[" stays one element.
func Key(path, key string) string { return path + "[" + strconv.Quote(key) + "]" }

// MaxNodes bounds the values Decode looks at, counting a value reached
// through several aliases once per alias. A few anchors that alias each
// other expand exponentially (a "billion laughs" document); real
// configurations and scenarios have a few thousand values.
const MaxNodes = 1 << 20

// Decode decodes n into out, a non-nil pointer to a struct, strictly: it
// returns a Problem for every unknown key (with a suggestion, see
// Unknown), every key given twice, every value of the wrong shape or type
// and every fraction written for an integer, each with the exact path of
// the value and its line, and the line of every path written (see Lines).
// The problems are ordered by line.
//
// One bad value never hides another: every value is checked against its
// own Go type, and out is decoded from a copy of n in which each bad value
// is replaced by one that decodes to its type's zero value and each
// repeated or unknown key is left out, so out holds every good value, a
// list keeps its length and every index still names what the document has
// there. A field whose value was bad keeps its zero value. n itself is
// never modified.
//
// The error is non-nil only when out could not be decoded at all (too many
// values through aliases: see MaxNodes, and yaml.v3 has a limit of its
// own); problems found before are still returned.
func Decode(n *yaml.Node, out any) (Lines, []Problem, error) {
	w := &walker{lines: Lines{}}
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	clean, _ := w.walk(n, reflect.TypeOf(out).Elem(), "")
	if w.nodes > MaxNodes {
		return w.lines, w.sorted(), fmt.Errorf("the document has more than %d values once its aliases are expanded", MaxNodes)
	}
	if err := clean.Decode(out); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return w.lines, w.sorted(), err
		}
		// Not expected: the walk replaced every value that does not
		// decode. Should yaml.v3 refuse something it did not foresee,
		// the message is still reported, with the line yaml.v3 names.
		for _, msg := range te.Errors {
			line, text := splitLine(msg)
			w.probs = append(w.probs, Problem{Line: line, Message: text})
		}
	}
	return w.lines, w.sorted(), nil
}

type walker struct {
	lines Lines
	probs []Problem
	nodes int
}

func (w *walker) add(path string, line int, format string, args ...any) {
	w.probs = append(w.probs, Problem{Path: path, Line: line, Message: fmt.Sprintf(format, args...)})
}

func (w *walker) sorted() []Problem {
	slices.SortStableFunc(w.probs, func(a, b Problem) int { return a.Line - b.Line })
	return w.probs
}

var (
	nodeType        = reflect.TypeOf(yaml.Node{})
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
)

// walk checks n against t, the Go type it decodes into, records lines, and
// returns the node to decode in n's place with whether it differs from n:
// n itself when nothing in it is wrong, else a copy without the bad values
// (see Decode). Only the nodes on the way to a bad value are copied.
func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) (*yaml.Node, bool) {
	if w.nodes++; w.nodes > MaxNodes {
		return n, false
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if _, ok := w.lines[path]; !ok && path != "" {
		w.lines[path] = n.Line
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		// The anchored value is checked where the alias is, for the
		// type it decodes into there; when it is bad there, this place
		// gets its own cleaned copy and the anchor's other uses keep
		// theirs.
		if clean, changed := w.walk(n.Alias, t, path); changed {
			return clean, true
		}
		return n, false
	}
	if t == nodeType {
		return n, false // decoded later, by whoever reads the node
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return w.leaf(n, t, path)
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return w.shape(n, t, path, "a mapping")
		}
		fields := Fields(t)
		return w.mapping(n, func(k *yaml.Node) string { return Join(path, k.Value) },
			func(k *yaml.Node, p string) (reflect.Type, bool) {
				f, ok := fields[k.Value]
				if !ok {
					w.add(p, k.Line, "%s", Unknown(k.Value, fields))
				}
				return f, ok
			})
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return w.shape(n, t, path, "a mapping")
		}
		return w.mapping(n, func(k *yaml.Node) string { return Key(path, k.Value) },
			func(k *yaml.Node, p string) (reflect.Type, bool) {
				_, bad := w.leaf(k, t.Key(), p)
				return t.Elem(), !bad
			})
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return w.shape(n, t, path, "a list")
		}
		var content []*yaml.Node // a copy, once an item has changed
		for i, item := range n.Content {
			clean, changed := w.walk(item, t.Elem(), Index(path, i))
			if changed && content == nil {
				content = slices.Clone(n.Content)
			}
			if content != nil {
				content[i] = clean
			}
		}
		if content == nil {
			return n, false
		}
		c := *n
		c.Content = content
		return &c, true
	}
	return w.leaf(n, t, path)
}

// mapping walks the pairs of a mapping node: pathOf names the path of a
// key's value, typeOf its Go type, or reports the key and returns false to
// leave the pair out. A key given twice is reported and its second pair
// left out, since yaml.v3 would refuse the whole mapping.
func (w *walker) mapping(n *yaml.Node, pathOf func(k *yaml.Node) string, typeOf func(k *yaml.Node, p string) (reflect.Type, bool)) (*yaml.Node, bool) {
	var content []*yaml.Node
	changed := false
	first := map[string]int{} // scalar key → the line it is first given on
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p := pathOf(k)
		if prev, dup := first[k.Value]; dup && k.Kind == yaml.ScalarNode {
			w.add(p, k.Line, "mapping key %q already defined at line %d", k.Value, prev)
			changed = true
			continue
		}
		if k.Kind == yaml.ScalarNode {
			first[k.Value] = k.Line
		}
		w.lines[p] = k.Line
		t, ok := typeOf(k, p)
		if !ok {
			changed = true
			continue
		}
		clean, ch := w.walk(v, t, p)
		changed = changed || ch
		content = append(content, k, clean)
	}
	if !changed {
		return n, false
	}
	c := *n
	c.Content = content
	return &c, true
}

// shape reports a value that is not the collection its field needs. Null
// (a key with nothing after it) is an empty collection, as yaml.v3 decodes
// it.
func (w *walker) shape(n *yaml.Node, t reflect.Type, path, want string) (*yaml.Node, bool) {
	if isNull(n) {
		return n, false
	}
	w.add(path, n.Line, "expected %s, found %s", want, kindName(n))
	return zero(n, t), true
}

// leaf checks a value that is decoded whole, a scalar or a type with its
// own UnmarshalYAML, by decoding it alone into a fresh t: yaml.v3 and the
// type's own rules decide what is accepted, exactly as in the real decode.
func (w *walker) leaf(n *yaml.Node, t reflect.Type, path string) (*yaml.Node, bool) {
	err := n.Decode(reflect.New(t).Interface())
	var te *yaml.TypeError
	switch {
	case errors.As(err, &te):
		for _, msg := range te.Errors {
			_, text := splitLine(msg)
			w.add(path, n.Line, "%s", text)
		}
		return zero(n, t), true
	case err != nil:
		w.add(path, n.Line, "%s", err)
		return zero(n, t), true
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		// yaml.v3 truncates a float decoded into an integer (2.5
		// becomes 2); strict decoding refuses a fraction. 2.0 and 1e3
		// are whole numbers and stay accepted, as JSON Schema's
		// integer does.
		if n.ShortTag() == "!!float" {
			if f, err := strconv.ParseFloat(n.Value, 64); err == nil && f != math.Trunc(f) {
				w.add(path, n.Line, "%s is not a whole number", n.Value)
				return zero(n, t), true
			}
		}
	}
	return n, false
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// zero is what a bad value n is replaced with: a node that decodes to the
// zero value of t, so that its field keeps its zero value and a list item
// stays in place. Null would not do: yaml.v3 leaves a null item out of a
// list of non-pointers, which shifts every later index. Null is the
// fallback for a type whose zero value does not survive a round trip.
func zero(n *yaml.Node, t reflect.Type) *yaml.Node {
	z := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"} // a struct decoded from {} keeps every zero field
	if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(unmarshalerType) {
		z = &yaml.Node{}
		if z.Encode(reflect.Zero(t).Interface()) != nil {
			z = nil
		}
	}
	if z == nil || z.Decode(reflect.New(t).Interface()) != nil {
		z = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}
	}
	z.Line, z.Column = n.Line, n.Column
	return z
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	return fmt.Sprintf("the value %q", n.Value)
}

var (
	lineMsg = regexp.MustCompile(`^line (\d+): (.*)$`)
	// A Go type in a yaml.v3 message, "into policy.Strategy": users know
	// the field, not the package.
	qualified = regexp.MustCompile(`\b[a-z][a-z0-9_]*\.([A-Z])`)
)

// splitLine splits a yaml.v3 message "line 7: cannot unmarshal …" into
// its line (0 when it names none) and its text without Go package names.
func splitLine(msg string) (int, string) {
	line := 0
	if m := lineMsg.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	return line, qualified.ReplaceAllString(msg, "$1")
}
