package httpproxy

import (
	"encoding/json"
	"testing"
)

func TestChoiceEnds(t *testing.T) {
	const (
		open0 = `{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}`
		end0  = `{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`
		open1 = `{"choices":[{"index":1,"delta":{"content":"b"},"finish_reason":null}]}`
		end1  = `{"choices":[{"index":1,"delta":{},"finish_reason":"length"}]}`
		usage = `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`
	)
	tests := []struct {
		name   string
		chunks []string
		want   bool
	}{
		{"nothing", nil, false},
		{"no finish_reason", []string{open0, open0}, false},
		{"finished", []string{open0, end0}, true},
		{"finished, then usage", []string{open0, end0, usage}, true},
		{"usage alone", []string{usage}, false},
		{"no index means 0", []string{`{"choices":[{"delta":{}, "finish_reason" : "stop"}]}`}, true},
		{"two choices, both finished in one chunk", []string{open0, open1, `{"choices":[{"index":1,"finish_reason":"stop"},{"index":0,"finish_reason":"stop"}]}`}, true},
		{"two choices, one finished", []string{open0, open1, end1}, false},
		{"a choice seen after the others finished", []string{open0, end0, open1}, false},
		{"an empty finish_reason", []string{`{"choices":[{"index":0,"finish_reason":""}]}`}, false},
		{"a tool call's index is not a choice's", []string{`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":3,"id":"c"}]},"finish_reason":null}]}`, end0}, true},
		{"a nested finish_reason is not the choice's", []string{`{"choices":[{"index":0,"delta":{"x":{"finish_reason":"stop"}}}]}`}, false},
		{"the largest index", []string{`{"choices":[{"index":127,"finish_reason":"stop"}]}`}, true},
		{"an index out of range", []string{end0, `{"choices":[{"index":128,"finish_reason":"stop"}]}`}, false},
		{"a negative index", []string{end0, `{"choices":[{"index":-1,"finish_reason":"stop"}]}`}, false},
		{"a repeated choices key", []string{`{"choices":[{"index":0,"finish_reason":"stop"}],"choices":[]}`}, false},
		{"not an object", []string{`[1,2]`, end0}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c, w choiceEnds
			for _, ch := range tt.chunks {
				c.observe([]byte(ch))
				w.walk([]byte(ch))
			}
			if got := c.complete(); got != tt.want {
				t.Errorf("complete() = %v, want %v", got, tt.want)
			}
			if got := w.complete(); got != tt.want {
				t.Errorf("without the fast path, complete() = %v, want %v", got, tt.want)
			}
		})
	}
}

// observe is on the relay's path for every chunk: it must not allocate.
func TestChoiceEndsAllocs(t *testing.T) {
	ch := []byte(chunk("gpt-4o", "token")[len("data: ") : len(chunk("gpt-4o", "token"))-2])
	var c choiceEnds
	if n := testing.AllocsPerRun(100, func() { c.observe(ch) }); n != 0 {
		t.Errorf("observe allocates %v times per chunk", n)
	}
}

// The fast path takes a chunk only when the structural walk would record
// no finish_reason and no choice index but 0 for it.
func FuzzPlainChunk(f *testing.F) {
	for _, s := range []string{
		chunk("gpt-4o", "x")[len("data: ") : len(chunk("gpt-4o", "x"))-2],
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]},"finish_reason":null}]}`,
		`{"choices":[{"index" : 1,"finish_reason" : null}]}`,
		`{"choices":[{"index":0,"finish_reason":"stop"}]}`,
		`{"choices":[{"ind\u0065x":2}]}`,
		`{"choices":[{"index":0e1,"finish_reason":""}]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		data := []byte(s)
		if !json.Valid(data) || !plainChunk(data) {
			return
		}
		var w choiceEnds
		w.walk(data)
		if w.finished || w.ended != [2]uint64{} || w.seen[0]&^1 != 0 || w.seen[1] != 0 {
			t.Errorf("plainChunk(%s), but the walk records %+v", s, w)
		}
	})
}
