package httpproxy

import (
	"bytes"
	"encoding/json"
	"math"
	"unicode/utf16"
	"unicode/utf8"
)

// This file reads what a continuation keeps of each data chunk of the
// answer (continuation.observe): the first chunk's id, model and created,
// and choice 0's text, stopping as soon as the stream can no longer be
// continued. It runs for every event of a stream that may be continued,
// so it reads a chunk in one pass, without allocating, and decodes only
// the content it keeps.
//
// Its contract is json.Unmarshal's into chunkView, byte for byte: the same
// chunks are unreadable (any syntax error anywhere in the chunk, or a
// member chunkView reads holding the wrong type), the same text is kept,
// and the same reasons stop it. Two other designs were measured and
// rejected: json.Unmarshal itself (about 2 µs and 15 allocations per
// chunk, BenchmarkStreamEvent) and json.Valid followed by the structural
// scanner of model.go (json.Valid alone costs 470 ns on a typical 191-byte
// chunk, three times chunkReader's whole pass, and the scanner checks no
// type). So chunkReader validates as it walks, strictly, where the scanner
// of model.go is only structural; it reuses that scanner's white space and
// byte reading.
//
// A few shapes are left to json.Unmarshal (observeSlow), because its rules
// for them are intricate and no upstream sends them: a key chunkView might
// match other than by its exact spelling (json.Unmarshal unescapes keys
// and matches them case-insensitively, with Unicode folding), a member
// chunkView reads repeated within one object (a repeated "choices" merges
// into the elements decoded before), and nesting deeper than chunkDepth.

// Why a chunk stops the continuation (continuation.stop).
const (
	stopUnreadable  = "a chunk the gateway cannot read"
	stopOtherChoice = "a chunk of another choice than 0"
	// A call's arguments cut halfway cannot be handed to another target
	// as text.
	stopToolCall = "a tool call in flight"
	stopFinished = "the answer's finish_reason was sent"
	stopTooLong  = "an answer longer than MaxContinuationText"
)

// choiceStop says why a choice stops the continuation, in the order the
// rules apply, or "" when its content, if any, may be kept: other is an
// index other than 0, call a tool_calls or function_call present and not
// null, finished a non-empty finish_reason.
func choiceStop(other, call, finished bool) string {
	switch {
	case other:
		return stopOtherChoice
	case call:
		return stopToolCall
	case finished:
		return stopFinished
	}
	return ""
}

// chunkDepth bounds the nesting chunkReader follows; a deeper chunk is
// left to json.Unmarshal, whose own limit (10000) is far higher.
const chunkDepth = 64

// chunkResult is what chunkReader makes of a chunk.
type chunkResult int

const (
	chunkOK   chunkResult = iota
	chunkBad              // json.Unmarshal into chunkView fails
	chunkSlow             // a shape left to json.Unmarshal
)

// span is the byte range of a JSON value in the chunk; the zero span is
// a member that is absent (a value is never empty).
type span struct{ start, end int }

// chunkReader reads one chunk. Its effects on the text are tentative: it
// appends choice 0's content to text as each choice ends, and the caller
// keeps them only when the whole chunk proved readable (chunkOK). A
// chunkReader is used once, on the goroutine that owns the continuation.
type chunkReader struct {
	scanner
	res                chunkResult
	id, model, created span
	text               []byte // the continuation's text, then this chunk's
	stop               string // why the chunk stops the continuation
	long               bool   // stop is stopTooLong: the text is dropped
}

// choiceView is what chunkReader reads of one element of "choices".
type choiceView struct {
	other, call, finished bool
	content               span // inner bytes of the string, zero if none
	escaped               bool // content holds a backslash or a byte ≥ 0x80
}

// The member names chunkView reads, per object, as json.Unmarshal matches
// them exactly.
var (
	topNames    = []string{"id", "model", "created", "choices"}
	choiceNames = []string{"index", "delta", "finish_reason"}
	deltaNames  = []string{"content", "tool_calls", "function_call"}
)

const (
	fID = iota
	fModel
	fCreated
	fChoices
)

const (
	fIndex = iota
	fDelta
	fFinish
)

const (
	fContent = iota
	fToolCalls
	fFunctionCall
)

func (r *chunkReader) bad() bool  { r.res = chunkBad; return false }
func (r *chunkReader) slow() bool { r.res = chunkSlow; return false }

// read reads the whole chunk; r.res says what came of it.
func (r *chunkReader) read() chunkResult {
	r.ws()
	ok := false
	switch r.peek() {
	case '{':
		r.i++
		ok = r.top()
	case 'n':
		// A null chunk reads as a chunk with no member.
		ok = r.lit("null")
	default:
		// Any other value is either invalid or of the wrong type.
		ok = r.bad()
	}
	if ok {
		r.ws()
		if r.i != len(r.b) {
			r.bad()
		}
	}
	return r.res
}

// peek returns the byte at r.i, 0 at the end.
func (r *chunkReader) peek() byte {
	if r.i < len(r.b) {
		return r.b[r.i]
	}
	return 0
}

// top reads the members of the chunk, after its '{'.
func (r *chunkReader) top() bool {
	if r.empty('}') {
		return true
	}
	seenChoices := false
	for {
		f, ok := r.key(topNames, nil)
		if !ok {
			return false
		}
		start := r.i
		switch f {
		case fID, fModel, fCreated:
			// Repeated, the last one counts, as with json.Unmarshal.
			if !r.value(1) {
				return false
			}
			s := span{start, r.i}
			switch f {
			case fID:
				r.id = s
			case fModel:
				r.model = s
			default:
				r.created = s
			}
		case fChoices:
			if seenChoices {
				return r.slow()
			}
			seenChoices = true
			switch r.peek() {
			case '[':
				r.i++
				ok = r.choices()
			case 'n':
				ok = r.lit("null")
			default:
				ok = r.bad()
			}
			if !ok {
				return false
			}
		default:
			if !r.value(1) {
				return false
			}
		}
		more, ok := r.next('}')
		if !more {
			return ok
		}
	}
}

// choices reads the elements of "choices", after its '['.
func (r *chunkReader) choices() bool {
	if r.empty(']') {
		return true
	}
	for {
		var x choiceView
		switch r.peek() {
		case '{':
			r.i++
			if !r.choice(&x) {
				return false
			}
		case 'n':
			// A null element decodes as a zero choice: index 0, no delta.
			if !r.lit("null") {
				return false
			}
		default:
			return r.bad()
		}
		r.apply(&x)
		more, ok := r.next(']')
		if !more {
			return ok
		}
	}
}

// choice reads the members of one choice, after its '{'.
func (r *chunkReader) choice(x *choiceView) bool {
	if r.empty('}') {
		return true
	}
	var seen [3]bool
	for {
		f, ok := r.key(choiceNames, &seen)
		if !ok {
			return false
		}
		switch f {
		case fIndex:
			ok = r.index(x)
		case fDelta:
			switch r.peek() {
			case '{':
				r.i++
				ok = r.delta(x)
			case 'n':
				ok = r.lit("null")
			default:
				ok = r.bad()
			}
		case fFinish:
			switch r.peek() {
			case '"':
				start := r.i
				_, ok = r.str()
				x.finished = r.i-start > 2
			case 'n':
				ok = r.lit("null")
			default:
				ok = r.bad()
			}
		default:
			ok = r.value(3)
		}
		if !ok {
			return false
		}
		more, ok := r.next('}')
		if !more {
			return ok
		}
	}
}

// delta reads the members of a choice's delta, after its '{'.
func (r *chunkReader) delta(x *choiceView) bool {
	if r.empty('}') {
		return true
	}
	var seen [3]bool
	for {
		f, ok := r.key(deltaNames, &seen)
		if !ok {
			return false
		}
		start := r.i
		switch f {
		case fContent:
			switch r.peek() {
			case '"':
				x.escaped, ok = r.str()
				x.content = span{start + 1, r.i - 1}
			case 'n':
				ok = r.lit("null")
			default:
				ok = r.bad()
			}
		case fToolCalls, fFunctionCall:
			ok = r.value(4)
			x.call = x.call || string(r.b[start:r.i]) != "null"
		default:
			ok = r.value(4)
		}
		if !ok {
			return false
		}
		more, ok := r.next('}')
		if !more {
			return ok
		}
	}
}

// index reads a choice's "index", which json.Unmarshal decodes into an
// int: a number that is an integer in the range of int, or null.
func (r *chunkReader) index(x *choiceView) bool {
	if r.peek() == 'n' {
		return r.lit("null")
	}
	start := r.i
	if !r.number() {
		return false
	}
	v := r.b[start:r.i]
	neg := v[0] == '-'
	if neg {
		v = v[1:]
	}
	if len(v) > 19 {
		return r.bad()
	}
	var n uint64
	for _, d := range v {
		if d < '0' || d > '9' {
			return r.bad() // a fraction or an exponent
		}
		n = n*10 + uint64(d-'0')
	}
	if limit := uint64(math.MaxInt); n > limit && !(neg && n == limit+1) {
		return r.bad()
	}
	x.other = n != 0
	return true
}

// apply applies the rules of continuation.observe to one choice, unless
// an earlier one stopped the chunk.
func (r *chunkReader) apply(x *choiceView) {
	if r.stop != "" {
		return
	}
	if r.stop = choiceStop(x.other, x.call, x.finished); r.stop != "" || x.content.end == 0 {
		return
	}
	r.text = appendUnquoted(r.text, r.b[x.content.start:x.content.end], x.escaped)
	if len(r.text) > MaxContinuationText {
		r.stop, r.long = stopTooLong, true
	}
}

// key reads a member's key and its colon, and returns the index of the
// key in names, -1 for a key json.Unmarshal would ignore. A key it might
// match other than by its exact spelling is left to it. seen, when not
// nil, records the members of names read so far in the object, each of
// which chunkView reads at most once: a repeated one is left to
// json.Unmarshal too.
func (r *chunkReader) key(names []string, seen *[3]bool) (int, bool) {
	r.ws()
	if r.peek() != '"' {
		return -1, r.bad()
	}
	start := r.i
	odd, ok := r.str()
	if !ok {
		return -1, false
	}
	k := r.b[start+1 : r.i-1]
	r.ws()
	if !r.eat(':') {
		return -1, r.bad()
	}
	r.ws()
	if len(names) == 0 {
		return -1, true
	}
	if odd {
		return -1, r.slow()
	}
	for f, n := range names {
		if string(k) == n {
			if seen != nil {
				if seen[f] {
					return f, r.slow()
				}
				seen[f] = true
			}
			return f, true
		}
	}
	for _, n := range names {
		if foldsTo(k, n) {
			return -1, r.slow()
		}
	}
	return -1, true
}

// foldsTo reports whether the ASCII key k equals the lower-case name but
// for the case of its letters.
func foldsTo(k []byte, name string) bool {
	if len(k) != len(name) {
		return false
	}
	for i, c := range k {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}

// empty reads the white space after an opening bracket and, if close
// follows, the close.
func (r *chunkReader) empty(close byte) bool {
	r.ws()
	return r.eat(close)
}

// next reads what follows a member or an element: more is true after a
// comma, false after close or on an error (then ok is false).
func (r *chunkReader) next(close byte) (more, ok bool) {
	r.ws()
	if r.eat(',') {
		r.ws()
		return true, true
	}
	if r.eat(close) {
		return false, true
	}
	return false, r.bad()
}

// value reads any JSON value at r.i, at the given depth of nesting.
func (r *chunkReader) value(depth int) bool {
	switch c := r.peek(); {
	case c == '"':
		_, ok := r.str()
		return ok
	case c == '{' || c == '[':
		if depth >= chunkDepth {
			return r.slow()
		}
		r.i++
		close := byte('}')
		if c == '[' {
			close = ']'
		}
		if r.empty(close) {
			return true
		}
		for {
			if c == '{' {
				if _, ok := r.key(nil, nil); !ok {
					return false
				}
			}
			if !r.value(depth + 1) {
				return false
			}
			more, ok := r.next(close)
			if !more {
				return ok
			}
		}
	case c == 't':
		return r.lit("true")
	case c == 'f':
		return r.lit("false")
	case c == 'n':
		return r.lit("null")
	default:
		return r.number()
	}
}

// lit reads the literal word.
func (r *chunkReader) lit(word string) bool {
	if len(r.b)-r.i < len(word) || string(r.b[r.i:r.i+len(word)]) != word {
		return r.bad()
	}
	r.i += len(word)
	return true
}

// number reads a number in JSON's syntax. What follows it is checked by
// the caller, which expects white space, a comma, a bracket or the end.
func (r *chunkReader) number() bool {
	b, i := r.b, r.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		i = digits(b, i)
	default:
		return r.bad()
	}
	if i < len(b) && b[i] == '.' {
		if j := digits(b, i+1); j > i+1 {
			i = j
		} else {
			return r.bad()
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if j := digits(b, i); j > i {
			i = j
		} else {
			return r.bad()
		}
	}
	r.i = i
	return true
}

// digits returns the offset past the decimal digits of b from i.
func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// plainByte marks the bytes a JSON string holds as they are: not a quote,
// a backslash, a control character or part of a multi-byte character.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str reads a string at r.i, quotes included, strictly: no control
// character, only JSON's escapes. Invalid UTF-8 is accepted, as
// json.Unmarshal accepts it. odd says the string holds a backslash or a
// byte ≥ 0x80, so that its value may differ from its bytes.
func (r *chunkReader) str() (odd, ok bool) {
	b, i := r.b, r.i+1
	for {
		for i < len(b) && plainByte[b[i]] {
			i++
		}
		if i >= len(b) {
			return odd, r.bad()
		}
		switch c := b[i]; {
		case c == '"':
			r.i = i + 1
			return odd, true
		case c == '\\':
			odd = true
			if i+1 >= len(b) {
				return odd, r.bad()
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if hex4(b[i+2:]) < 0 {
					return odd, r.bad()
				}
				i += 6
			default:
				return odd, r.bad()
			}
		case c < 0x20:
			return odd, r.bad()
		default:
			odd = true
			i++
		}
	}
}

// hex4 decodes the four hexadecimal digits b starts with, -1 if it does
// not.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendUnquoted appends the value of the JSON string whose bytes between
// the quotes are s, which str accepted, decoded as json.Unmarshal decodes
// it: a \u escape of a surrogate that does not start a pair with the next
// \u escape is U+FFFD, and so is each byte of invalid UTF-8. odd is str's.
func appendUnquoted(dst, s []byte, odd bool) []byte {
	if !odd || bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s) {
		return append(dst, s...)
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			e := s[i+1]
			i += 2
			switch e {
			case 'b':
				dst = append(dst, '\b')
			case 'f':
				dst = append(dst, '\f')
			case 'n':
				dst = append(dst, '\n')
			case 'r':
				dst = append(dst, '\r')
			case 't':
				dst = append(dst, '\t')
			case 'u':
				u := hex4(s[i:])
				i += 4
				if utf16.IsSurrogate(u) {
					u2 := rune(-1)
					if len(s)-i >= 6 && s[i] == '\\' && s[i+1] == 'u' {
						u2 = hex4(s[i+2:])
					}
					if d := utf16.DecodeRune(u, u2); d != utf8.RuneError {
						dst = utf8.AppendRune(dst, d)
						i += 6
						continue
					}
					u = utf8.RuneError
				}
				dst = utf8.AppendRune(dst, u)
			default: // '"', '\\', '/'
				dst = append(dst, e)
			}
		case c < utf8.RuneSelf:
			dst = append(dst, c)
			i++
		default:
			u, n := utf8.DecodeRune(s[i:])
			dst = utf8.AppendRune(dst, u)
			i += n
		}
	}
	return dst
}

// keep copies the values the continuation keeps of its first chunk into
// one allocation; an absent member is nil.
func (r *chunkReader) keep() (id, model, created json.RawMessage) {
	n := r.id.end - r.id.start + r.model.end - r.model.start + r.created.end - r.created.start
	if n == 0 {
		return nil, nil, nil
	}
	buf := make([]byte, 0, n)
	one := func(s span) json.RawMessage {
		if s.end == 0 {
			return nil
		}
		k := len(buf)
		buf = append(buf, r.b[s.start:s.end]...)
		return buf[k:len(buf):len(buf)]
	}
	return one(r.id), one(r.model), one(r.created)
}
