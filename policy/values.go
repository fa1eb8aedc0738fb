package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// CodeSpec is one element of an on_status_codes entry's codes: a single
// status code written as an integer, or an inclusive range written as the
// string "start-end". It keeps what was written; Finalize checks it and
// expands it into a CodeSet.
type CodeSpec struct {
	Code  int    // a single code, when Range is empty
	Range string // "start-end", when the YAML value was a string
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (c *CodeSpec) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError(n, "a status code must be an integer or a \"start-end\" string")
	}
	if n.Tag == "!!int" {
		v, err := strconv.Atoi(n.Value)
		if err != nil {
			return typeError(n, fmt.Sprintf("status code %q is not an integer", n.Value))
		}
		*c = CodeSpec{Code: v}
		return nil
	}
	*c = CodeSpec{Range: n.Value}
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (c CodeSpec) MarshalYAML() (any, error) {
	if c.Range != "" {
		return c.Range, nil
	}
	return c.Code, nil
}

// String returns the code or range as written.
func (c CodeSpec) String() string {
	if c.Range != "" {
		return strconv.Quote(c.Range)
	}
	return strconv.Itoa(c.Code)
}

// bounds returns the inclusive range the spec denotes, or a reason it is
// invalid.
func (c CodeSpec) bounds() (lo, hi int, problem string) {
	if c.Range == "" {
		if c.Code < 100 || c.Code > 599 {
			return 0, 0, fmt.Sprintf("status code %d is outside 100-599", c.Code)
		}
		return c.Code, c.Code, ""
	}
	a, b, ok := strings.Cut(c.Range, "-")
	if !ok {
		return 0, 0, fmt.Sprintf("range %q is malformed: write a single code as an integer, a range as \"start-end\"", c.Range)
	}
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi, err2 := strconv.Atoi(strings.TrimSpace(b))
	switch {
	case err1 != nil || err2 != nil:
		return 0, 0, fmt.Sprintf("range %q is malformed: both ends must be integers", c.Range)
	case lo < 100 || lo > 599 || hi < 100 || hi > 599:
		return 0, 0, fmt.Sprintf("range %q is outside 100-599", c.Range)
	case lo > hi:
		return 0, 0, fmt.Sprintf("range %q is inverted: start %d is greater than end %d", c.Range, lo, hi)
	}
	return lo, hi, ""
}

// Jitter is the randomisation applied to a backoff delay (docs/behaviour.md#jitter). YAML
// accepts true (equal), false (none) or one of the names.
type Jitter string

// The jitter kinds.
const (
	JitterNone         Jitter = "none"
	JitterEqual        Jitter = "equal"
	JitterFull         Jitter = "full"
	JitterDecorrelated Jitter = "decorrelated"
)

func (j Jitter) valid() bool {
	return j == JitterNone || j == JitterEqual || j == JitterFull || j == JitterDecorrelated
}

// UnmarshalYAML implements yaml.Unmarshaler. An unknown name is kept and
// reported by validation with its field path.
func (j *Jitter) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError(n, "jitter must be true, false, none, equal, full or decorrelated")
	}
	switch {
	case n.Tag == "!!bool" && strings.EqualFold(n.Value, "true"):
		*j = JitterEqual
	case n.Tag == "!!bool":
		*j = JitterNone
	default:
		*j = Jitter(n.Value)
	}
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler: a Go duration string, or an
// integer number of seconds.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeError(n, "a duration must be a string such as \"1.5s\" or \"300ms\"")
	}
	if n.Tag == "!!int" {
		s, err := strconv.ParseInt(n.Value, 10, 64)
		if err != nil || s > int64(time.Duration(1<<63-1)/time.Second) || s < -int64(time.Duration(1<<63-1)/time.Second) {
			return typeError(n, fmt.Sprintf("duration %s is not a number of seconds in range", n.Value))
		}
		*d = Duration(time.Duration(s) * time.Second)
		return nil
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return typeError(n, fmt.Sprintf("invalid duration %q: write a Go duration such as \"1.5s\" or \"300ms\"", n.Value))
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) {
	return time.Duration(d).String(), nil
}

func typeError(n *yaml.Node, msg string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}
