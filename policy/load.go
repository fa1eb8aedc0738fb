package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
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
// validates it (docs/configuration.md#loading).
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
	var cfg Config
	lines, decoded, err := yamlkeys.Decode(doc, &cfg)
	probs := make([]Problem, len(decoded))
	for i, p := range decoded {
		probs[i] = Problem{Path: p.Path, Line: p.Line, Message: p.Message}
	}
	if err != nil {
		return nil, nil, &Error{Problems: append(probs, Problem{Line: doc.Line, Message: err.Error()})}
	}
	warns, err := finalize(&cfg, lines.Line)
	if len(probs) == 0 {
		if err != nil {
			return nil, warns, err
		}
		return &cfg, warns, nil
	}
	// Report decoding problems together with validation problems, except
	// those about a field that failed to decode: it holds its zero value,
	// not what the user wrote. The same goes for warnings.
	attachModels(&cfg, probs)
	var verr *Error
	if errors.As(err, &verr) {
		for _, v := range verr.Problems {
			if !coveredBy(v.Path, probs) {
				probs = append(probs, v)
			}
		}
	}
	warns = slices.DeleteFunc(warns, func(w Warning) bool { return coveredBy(w.Path, probs) })
	slices.SortStableFunc(probs, func(a, b Problem) int { return a.Line - b.Line })
	return nil, warns, &Error{Problems: probs}
}

// coveredBy reports whether a validation problem at path is about a value
// that failed to decode: the value itself or a field inside it. Decoding
// keeps every list at its length (a bad item decodes as its zero value),
// so the problems of the other items keep their paths and are not covered.
func coveredBy(path string, probs []Problem) bool {
	for _, p := range probs {
		if p.Path != "" && (path == p.Path || under(path, p.Path)) {
			return true
		}
	}
	return false
}

// under reports whether path is strictly inside ancestor.
func under(path, ancestor string) bool {
	return len(path) > len(ancestor) && strings.HasPrefix(path, ancestor) &&
		(path[len(ancestor)] == '.' || path[len(ancestor)] == '[')
}

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
