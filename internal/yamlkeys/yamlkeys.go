// Package yamlkeys is the strict YAML decoding that policy (configuration
// files) and bench (scenario files) share, so that both name a problem the
// same way: Decode reports every unknown key, repeated key and value of the
// wrong type with its field path and line, and records the line of every
// path for the checks that run on the decoded Go values.
//
// Paths are written as in Go: fields joined by ".", list items as [i], map
// values as ["key"]: model_providers[0].retry_policy.backoff.max_ms,
// upstreams["openai/gpt-4o"].phases[1].share.
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
