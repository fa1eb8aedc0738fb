package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/reroute-go/reroute/internal/yamlkeys"
)

// Load reads the configuration file at path and parses it with Parse.
func Load(path string) (*Config, []Warning, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reroute: read configuration: %w", err)
	}
	return Parse(data)
}

// Parse decodes one YAML configuration document strictly, fills defaults,
// expands $NAME and ${NAME} in access_key from the environment, and
// validates it (SPEC §1–2).
//
// On success it returns the configuration and its warnings. Otherwise the
// error is an *Error listing every problem found, each with its field path
// and line; an unknown key is such a problem.
func Parse(data []byte) (*Config, []Warning, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil, &Error{Problems: []Problem{{Path: "model_providers", Message: "the configuration is empty: at least one provider is required"}}}
		}
		return nil, nil, &Error{Problems: []Problem{{Message: "YAML syntax: " + err.Error()}}}
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, nil, &Error{Problems: []Problem{{Line: extra.Line, Message: "the file holds more than one YAML document; write one"}}}
	case !errors.Is(err, io.EOF):
		// A broken second document is still a second document.
		return nil, nil, &Error{Problems: []Problem{{Message: "YAML syntax: " + err.Error()}}}
	}
	return parseNode(&root)
}

// ParseNode is Parse for a configuration that is part of a larger YAML
// document, such as the config key of a load generator scenario. Lines in
// problems are those of the enclosing document; paths start at the node.
func ParseNode(n *yaml.Node) (*Config, []Warning, error) {
	return parseNode(n)
}

func parseNode(root *yaml.Node) (*Config, []Warning, error) {
	doc := root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return nil, nil, &Error{Problems: []Problem{{Line: doc.Line, Message: "the configuration must be a mapping with a model_providers key"}}}
	}
	idx := &lineIndex{lines: map[string]int{}, byLine: map[int]string{}}
	var probs []Problem
	walk(doc, reflect.TypeOf(Config{}), "", idx, &probs)

	var cfg Config
	if err := doc.Decode(&cfg); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, nil, &Error{Problems: []Problem{{Message: err.Error()}}}
		}
		for _, msg := range te.Errors {
			probs = append(probs, idx.fromYAML(msg))
		}
	}
	warns, err := finalize(&cfg, idx.line)
	if len(probs) == 0 {
		if err != nil {
			return nil, warns, err
		}
		return &cfg, warns, nil
	}
	// Report decoding problems together with validation problems, except
	// those about a field that failed to decode: its zero value is not what
	// the user wrote.
	attachModels(&cfg, probs)
	var verr *Error
	if errors.As(err, &verr) {
		for _, v := range verr.Problems {
			if !coveredBy(v.Path, probs) {
				probs = append(probs, v)
			}
		}
	}
	slices.SortStableFunc(probs, func(a, b Problem) int { return a.Line - b.Line })
	return nil, warns, &Error{Problems: probs}
}

// coveredBy reports whether a validation problem at path is about a field
// that failed to decode: the field itself, a field inside it, or a
// collection holding it (a list whose element failed is decoded short).
func coveredBy(path string, probs []Problem) bool {
	for _, p := range probs {
		if p.Path != "" && (path == p.Path || under(path, p.Path) || under(p.Path, path)) {
			return true
		}
	}
	return false
}

// lineIndex remembers the line of every field path of a YAML document, so
// that validation, which works on Go values, can name lines.
type lineIndex struct {
	lines  map[string]int
	byLine map[int]string
	shared map[int]bool // lines holding sibling fields; see setLine
}

func (x *lineIndex) line(path string) int { return yamlkeys.Line(x.lines, path) }

// setLine records that path is written on line. yaml.v3 type errors name a
// line but no column, so a line names the deepest path written on it (what
// a type error on a block-style line is about), or, when a flow collection
// puts several sibling fields on one line, their nearest common ancestor:
// naming one sibling would blame a field that may be fine.
func (x *lineIndex) setLine(line int, path string) {
	prev, ok := x.byLine[line]
	switch {
	case !ok || (under(path, prev) && !x.shared[line]):
		x.byLine[line] = path
	case prev == path || under(path, prev) || under(prev, path):
	default:
		x.byLine[line] = yamlkeys.Common(prev, path)
		if x.shared == nil {
			x.shared = map[int]bool{}
		}
		x.shared[line] = true
	}
}

// under reports whether path is strictly inside ancestor.
func under(path, ancestor string) bool {
	return len(path) > len(ancestor) && strings.HasPrefix(path, ancestor) &&
		(path[len(ancestor)] == '.' || path[len(ancestor)] == '[')
}

var lineMsg = regexp.MustCompile(`^line (\d+): (.*)$`)

// fromYAML turns a yaml.v3 type error ("line 7: cannot unmarshal …") into a
// Problem with the field path recorded for that line.
func (x *lineIndex) fromYAML(msg string) Problem {
	m := lineMsg.FindStringSubmatch(msg)
	if m == nil {
		return Problem{Message: msg}
	}
	line, _ := strconv.Atoi(m[1])
	text := strings.ReplaceAll(m[2], "policy.", "")
	return Problem{Path: x.byLine[line], Line: line, Message: text}
}

// walk checks every mapping key of n against the yaml tags of t (strict
// decoding that names the path, not just the line) and records lines.
func walk(n *yaml.Node, t reflect.Type, path string, idx *lineIndex, probs *[]Problem) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if path != "" {
		if _, ok := idx.lines[path]; !ok {
			idx.lines[path] = n.Line
		}
		idx.setLine(n.Line, path)
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // the decoder reports the type mismatch
		}
		fields := yamlkeys.Fields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := yamlkeys.Join(path, k.Value)
			f, ok := fields[k.Value]
			if !ok {
				*probs = append(*probs, Problem{Path: p, Line: k.Line, Message: yamlkeys.Unknown(k.Value, fields)})
				continue
			}
			idx.lines[p] = k.Line
			idx.setLine(k.Line, p)
			walk(v, f, p, idx, probs)
			idx.lines[p] = k.Line
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, item := range n.Content {
			walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), idx, probs)
		}
	case reflect.Int:
		// yaml.v3 truncates a float decoded into an int (2.5 becomes 2);
		// strict decoding refuses a fraction. 2.0 and 1e3 are whole
		// numbers and stay accepted, as JSON Schema's integer does.
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" {
			if f, err := strconv.ParseFloat(n.Value, 64); err == nil && f != math.Trunc(f) {
				*probs = append(*probs, Problem{Path: path, Line: n.Line, Message: fmt.Sprintf("%s is not a whole number", n.Value)})
			}
		}
	}
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

func attachModels(cfg *Config, probs []Problem) {
	for i := range probs {
		probs[i].Model = modelAt(cfg, probs[i].Path)
	}
}

var providerIndex = regexp.MustCompile(`^model_providers\[(\d+)\]`)

func modelAt(cfg *Config, path string) string {
	m := providerIndex.FindStringSubmatch(path)
	if m == nil {
		return ""
	}
	i, _ := strconv.Atoi(m[1])
	if i < len(cfg.ModelProviders) {
		return cfg.ModelProviders[i].Model
	}
	return ""
}
