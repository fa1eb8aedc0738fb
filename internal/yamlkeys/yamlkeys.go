// Package yamlkeys holds what strict YAML decoding needs to name an unknown
// key well: the keys a Go type accepts, and a message that suggests the
// nearest one. policy (configuration files) and bench (scenario files)
// share it.
package yamlkeys

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Join appends key to a dotted field path.
func Join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Fields returns the yaml keys of struct type t with the type each decodes
// into.
func Fields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		m[name] = f.Type
	}
	return m
}

// Unknown returns the message for an unknown key: a suggestion when a
// known key is within two edits of it, else the list of known keys.
func Unknown(key string, fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if closeTo(key, name) {
			return fmt.Sprintf("unknown key %q (did you mean %q?)", key, name)
		}
	}
	return fmt.Sprintf("unknown key %q; known keys here: %s", key, strings.Join(names, ", "))
}

// closeTo reports whether a and b are at most two single-character edits
// apart: enough to catch the usual typos.
func closeTo(a, b string) bool {
	if d := len(a) - len(b); d > 2 || d < -2 {
		return false
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)] <= 2
}

// Line returns the line recorded for path, or for its nearest enclosing
// path: a key left out (a required one, or one a default filled) has no
// line of its own, so the enclosing key's line is the best to point at. 0
// when none is recorded.
func Line(lines map[string]int, path string) int {
	for path != "" {
		if l, ok := lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
	return 0
}

// Common returns the longest field path that is a or b or contains both:
// "x.a[0].b" and "x.a[0].c" give "x.a[0]".
func Common(a, b string) string {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	boundary := func(s string, i int) bool { return i == len(s) || s[i] == '.' || s[i] == '[' }
	for ; n > 0; n-- {
		if boundary(a, n) && boundary(b, n) {
			return a[:n]
		}
	}
	return ""
}
