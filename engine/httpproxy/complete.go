package httpproxy

import "bytes"

// This file decides when a stream that ends without "data: [DONE]" is
// nonetheless a complete answer (docs/gateway.md#tolerated-stream-oddities).
// Several OpenAI-compatible servers end their streams that way: every
// token, a chunk with a finish_reason, perhaps a usage chunk, then a clean
// end of the body. The rule is a property of the events alone; the relay
// applies it only at a clean end of the body (io.EOF), never after a cut,
// a stall or a deadline.

// maxChoices is how many choice indexes a stream may use and still be
// judged complete without [DONE]: 128, the most the OpenAI API lets a
// request ask for (n). A stream with an index outside [0, maxChoices) is
// not judged: it needs its [DONE].
const maxChoices = 128

// choiceEnds records which choices of a chat completion stream have
// appeared in its chunks and which of them have finished. It reads each
// chunk with the structural scanner of model.go: no allocation, no
// decoding beyond the two members it looks at. The zero value is a stream
// with no chunk yet. It is not safe for concurrent use.
type choiceEnds struct {
	seen, ended [maxChoices / 64]uint64 // bit i: choice index i
	finished    bool                    // some choice had a finish_reason
	odd         bool                    // an index the bitsets cannot hold: never complete
}

// observe records the choices of one data chunk: for each element of its
// top-level "choices" array, its "index" (0 when absent) and whether its
// "finish_reason" is a non-empty string (null and "" are what chunks before
// the last one carry). A chunk that is not an object, or has no choices
// (the usage chunk has "choices":[]), records nothing.
func (c *choiceEnds) observe(data []byte) {
	if plainChunk(data) {
		// Choice 0, unfinished, or no choice at all: recording index 0
		// as seen is exact for the first and errs on the safe side for
		// the second (a stream without index 0 needs its [DONE]).
		c.seen[0] |= 1
		return
	}
	c.walk(data)
}

// walk is observe without its fast path: the structural reading of a
// chunk's choices.
func (c *choiceEnds) walk(data []byte) {
	var buf [1]member
	ms, ok := findKey(data, "choices", buf[:0])
	if !ok || len(ms) != 1 {
		// A repeated "choices" key: decoders disagree on which one
		// counts, so neither is trusted.
		c.odd = c.odd || len(ms) > 1
		return
	}
	arr := data[ms[0].valStart:ms[0].valEnd]
	s := scanner{b: arr}
	if !s.eat('[') {
		return
	}
	for {
		s.ws()
		if s.eat(']') {
			return
		}
		start := s.i
		if !s.value() {
			return
		}
		c.choice(arr[start:s.i])
		s.ws()
		if !s.eat(',') {
			return
		}
	}
}

var (
	finishKey  = []byte(`finish_reason"`)
	indexKey   = []byte(`index"`)
	escapeMark = []byte(`\u`)
)

// plainChunk is the relay's fast path: it reports, with a few byte
// searches instead of a structural walk, that every "finish_reason" key in
// data is null or "" and every "index" key is 0, anywhere in the chunk:
// then whatever choices it has are choice 0, unfinished, the case of every
// chunk of a one-choice stream but its last. A quote inside a JSON string
// is escaped, so these keys cannot hide in content; a key spelled with a
// \u escape could, so data with one takes the walk.
func plainChunk(data []byte) bool {
	if bytes.Contains(data, escapeMark) {
		return false
	}
	for rest := data; ; {
		i := keyAt(rest, finishKey)
		if i < 0 {
			break
		}
		rest = rest[i:]
		v, key := keyValue(rest)
		if key && !bytes.HasPrefix(v, []byte("null")) && !bytes.HasPrefix(v, []byte(`""`)) {
			return false
		}
	}
	for rest := data; ; {
		i := keyAt(rest, indexKey)
		if i < 0 {
			return true
		}
		rest = rest[i:]
		v, key := keyValue(rest)
		if key && (len(v) < 2 || v[0] != '0' || (v[1] >= '0' && v[1] <= '9') || v[1] == '.' || v[1] == 'e' || v[1] == 'E') {
			return false
		}
	}
}

// keyAt returns the offset just past the next occurrence of the quoted
// string whose content and closing quote are name, or -1. It searches for
// name without its opening quote: a letter is rarer in JSON than a quote,
// which makes the search several times faster.
func keyAt(b, name []byte) int {
	for off := 0; ; {
		i := bytes.Index(b[off:], name)
		if i < 0 {
			return -1
		}
		i += off
		off = i + len(name)
		if i > 0 && b[i-1] == '"' {
			return off
		}
	}
}

// keyValue reports whether b, which follows a JSON string, starts with the
// colon of a member (so the string was a key), and returns what follows the
// colon and its white space.
func keyValue(b []byte) (v []byte, key bool) {
	s := scanner{b: b}
	s.ws()
	if !s.eat(':') {
		return nil, false
	}
	s.ws()
	return b[s.i:], true
}

// choice records one element of a chunk's "choices".
func (c *choiceEnds) choice(el []byte) {
	index, ended := 0, false
	valid := scanTop(el, func(m member) bool {
		k, v := el[m.keyStart:m.keyEnd], el[m.valStart:m.valEnd]
		switch {
		case keyIs(k, "index"):
			index = smallIndex(v)
		case keyIs(k, "finish_reason"):
			ended = len(v) > 2 && v[0] == '"'
		}
		return true
	})
	if !valid {
		return
	}
	if index < 0 {
		c.odd = true
		return
	}
	c.seen[index/64] |= 1 << (index % 64)
	if ended {
		c.ended[index/64] |= 1 << (index % 64)
		c.finished = true
	}
}

// smallIndex decodes a choice index in [0, maxChoices); anything else
// (a negative, fractional or larger number, or not a number) is -1.
func smallIndex(v []byte) int {
	if len(v) == 0 || len(v) > 3 {
		return -1
	}
	n := 0
	for _, d := range v {
		if d < '0' || d > '9' {
			return -1
		}
		n = n*10 + int(d-'0')
	}
	if n >= maxChoices || (len(v) > 1 && v[0] == '0') {
		return -1
	}
	return n
}

// complete reports whether the chunks observed make a whole answer: some
// choice had a finish_reason, every choice index that appeared had one,
// and no chunk was beyond judging.
func (c *choiceEnds) complete() bool {
	if !c.finished || c.odd {
		return false
	}
	for i := range c.seen {
		if c.seen[i]&^c.ended[i] != 0 {
			return false
		}
	}
	return true
}
