package httpproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"
)

// This file finds and replaces the top-level "model" value of a request
// body without decoding the body (docs/gateway.md#what-happens-to-a-request): prompt caching upstream keys
// on the exact bytes, so every byte but the model value must survive a
// failover. encoding/json cannot do that (it re-encodes, sorts map keys and
// drops duplicates), so a small scanner walks the top-level object and
// records where each member's value starts and ends.

var (
	errNotObject = errors.New("the request body must be a JSON object")
	errNoModel   = errors.New("the request body has no top-level \"model\"")
	errModelType = errors.New("\"model\" must be a string")
)

// member is one top-level member of a JSON object: the byte ranges of its
// key (quotes included) and of its value.
type member struct {
	keyStart, keyEnd int
	valStart, valEnd int
}

// scanTop walks a JSON object and calls fn for every top-level member, in
// order. It returns false when b is not a JSON object as far as this
// structural walk can tell; callers that need strict validity check
// json.Valid first (the walk does not check escapes or number syntax). It
// never panics, whatever b holds.
func scanTop(b []byte, fn func(m member) bool) bool {
	s := scanner{b: b}
	s.ws()
	if !s.eat('{') {
		return false
	}
	s.ws()
	if s.eat('}') {
		s.ws()
		return s.i == len(b)
	}
	for {
		s.ws()
		var m member
		m.keyStart = s.i
		if !s.str() {
			return false
		}
		m.keyEnd = s.i
		s.ws()
		if !s.eat(':') {
			return false
		}
		s.ws()
		m.valStart = s.i
		if !s.value() {
			return false
		}
		m.valEnd = s.i
		if !fn(m) {
			return true
		}
		s.ws()
		if s.eat(',') {
			continue
		}
		if !s.eat('}') {
			return false
		}
		s.ws()
		return s.i == len(b)
	}
}

type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str skips a string starting at s.i, quotes included.
func (s *scanner) str() bool {
	if !s.eat('"') {
		return false
	}
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			s.i++
			return true
		case '\\':
			s.i += 2
		default:
			s.i++
		}
	}
	return false
}

// value skips one JSON value starting at s.i. Nesting is tracked with a
// counter, not recursion, so a deeply nested body cannot exhaust the stack.
func (s *scanner) value() bool {
	depth := 0
	for {
		s.ws()
		if s.i >= len(s.b) {
			return false
		}
		switch s.b[s.i] {
		case '"':
			if !s.str() {
				return false
			}
		case '{', '[':
			depth++
			s.i++
			continue
		case '}', ']':
			if depth == 0 {
				return false
			}
			depth--
			s.i++
		case ',', ':':
			if depth == 0 {
				return false
			}
			s.i++
			continue
		default:
			start := s.i
			for s.i < len(s.b) && isLiteralByte(s.b[s.i]) {
				s.i++
			}
			if s.i == start {
				return false
			}
		}
		if depth == 0 {
			return true
		}
	}
}

func isLiteralByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.'
}

// keyIs reports whether the JSON string k (quotes included) decodes to
// name. Keys are almost never escaped, so the common case is a byte
// comparison; an escaped key ("mod\u0065l") is decoded to compare.
func keyIs(k []byte, name string) bool {
	if len(k) < 2 {
		return false
	}
	inner := k[1 : len(k)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == name
	}
	var s string
	return json.Unmarshal(k, &s) == nil && s == name
}

// findKey returns the value ranges of every top-level member named key (a
// body may repeat a key; decoders disagree on which one wins, so callers
// treat all of them). ok is false when b is not an object.
func findKey(b []byte, key string, out []member) ([]member, bool) {
	ok := scanTop(b, func(m member) bool {
		if keyIs(b[m.keyStart:m.keyEnd], key) {
			out = append(out, m)
		}
		return true
	})
	return out, ok
}

// requestModel returns the decoded top-level "model" of a request body
// that json.Valid accepted. When the key appears more than once, every
// occurrence must agree: a body whose duplicates disagree would name a
// different model to different upstream parsers.
func requestModel(b []byte) (string, error) {
	var buf [2]member
	ms, ok := findKey(b, "model", buf[:0])
	if !ok {
		return "", errNotObject
	}
	if len(ms) == 0 {
		return "", errNoModel
	}
	var model string
	for i, m := range ms {
		v, ok := decodeString(b[m.valStart:m.valEnd])
		if !ok {
			return "", errModelType
		}
		if i > 0 && v != model {
			return "", errors.New("\"model\" is given more than once with different values")
		}
		model = v
	}
	return model, nil
}

// decodeString decodes a JSON string value; false if v is not a string.
func decodeString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	inner := v[1 : len(v)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}

// ReplaceModel returns body with the value of every top-level "model" key
// replaced by the JSON string model, in place: every byte outside those
// values is kept, whitespace, key order, escapes and nested "model" keys
// included. ok is false, and out nil, when that is impossible: body is not
// a JSON object, has no top-level "model", or a "model" value is not a
// string. The caller may then fall back to RewriteModel. body is not
// modified. ReplaceModel is safe for concurrent use.
func ReplaceModel(body []byte, model string) (out []byte, ok bool) {
	if !json.Valid(body) {
		return nil, false
	}
	var buf [2]member
	ms, ok := findKey(body, "model", buf[:0])
	if !ok || len(ms) == 0 {
		return nil, false
	}
	for _, m := range ms {
		if body[m.valStart] != '"' {
			return nil, false
		}
	}
	enc := appendJSONString(nil, model)
	out = make([]byte, 0, len(body)+len(ms)*(len(enc)-2))
	prev := 0
	for _, m := range ms {
		out = append(out, body[prev:m.valStart]...)
		out = append(out, enc...)
		prev = m.valEnd
	}
	return append(out, body[prev:]...), true
}

// RewriteModel is the fallback of ReplaceModel: it re-serializes the
// top-level object with every "model" member set to the string model (and
// one added when there is none), keeping the other members' keys and
// values byte for byte and in order; only the whitespace between
// top-level members is lost. It fails only if body is not a JSON object.
func RewriteModel(body []byte, model string) ([]byte, error) {
	if !json.Valid(body) {
		return nil, errNotObject
	}
	enc := appendJSONString(nil, model)
	out := make([]byte, 0, len(body)+len(enc)+10)
	out = append(out, '{')
	seen := false
	ok := scanTop(body, func(m member) bool {
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, body[m.keyStart:m.keyEnd]...)
		out = append(out, ':')
		if keyIs(body[m.keyStart:m.keyEnd], "model") {
			out = append(out, enc...)
			seen = true
		} else {
			out = append(out, body[m.valStart:m.valEnd]...)
		}
		return true
	})
	if !ok {
		return nil, errNotObject
	}
	if !seen {
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, `"model":`...)
		out = append(out, enc...)
	}
	return append(out, '}'), nil
}

// appendJSONString appends s as a JSON string. Unlike encoding/json it does
// not escape <, > and &: a model name is not HTML.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	return append(appendJSONChars(dst, s), '"')
}

// appendJSONChars appends the characters of s as they appear between the
// quotes of a JSON string: control characters, quotes, backslashes and
// U+2028/U+2029 escaped, each byte of invalid UTF-8 as U+FFFD.
func appendJSONChars(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return dst
}
