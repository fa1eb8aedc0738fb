package httpproxy

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// refContinuation is the part of a continuation that observe changes, as
// the naive model keeps it.
type refContinuation struct {
	text               []byte
	id, model, created json.RawMessage
	stop               string
}

// refChunkView is what the naive model decodes of a chunk.
type refChunkView struct {
	ID      json.RawMessage `json:"id"`
	Model   json.RawMessage `json:"model"`
	Created json.RawMessage `json:"created"`
	Choices []struct {
		Index int `json:"index"`
		Delta struct {
			Content      *string         `json:"content"`
			ToolCalls    json.RawMessage `json:"tool_calls"`
			FunctionCall json.RawMessage `json:"function_call"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
}

// observe is the naive model of continuation.observe: the chunk decoded by
// json.Unmarshal, then the rules applied choice by choice.
func (c *refContinuation) observe(data []byte) {
	if c.stop != "" {
		return
	}
	var ch refChunkView
	if err := json.Unmarshal(data, &ch); err != nil {
		c.stop = "a chunk the gateway cannot read"
		return
	}
	if c.id == nil {
		c.id, c.model, c.created = ch.ID, ch.Model, ch.Created
	}
	for _, x := range ch.Choices {
		switch {
		case x.Index != 0:
			c.stop = "a chunk of another choice than 0"
		case present(x.Delta.ToolCalls) || present(x.Delta.FunctionCall):
			c.stop = "a tool call in flight"
		case x.FinishReason != nil && *x.FinishReason != "":
			c.stop = "the answer's finish_reason was sent"
		case x.Delta.Content != nil && len(c.text)+len(*x.Delta.Content) > MaxContinuationText:
			c.stop, c.text = "an answer longer than MaxContinuationText", nil
		case x.Delta.Content != nil:
			c.text = append(c.text, *x.Delta.Content...)
			continue
		default:
			continue
		}
		return
	}
}

// sameObservations feeds chunks to observe and to the naive model, both
// starting with text and id, and reports how they differ.
func sameObservations(t *testing.T, text []byte, id json.RawMessage, chunks ...[]byte) {
	t.Helper()
	c := continuation{text: bytes.Clone(text), id: bytes.Clone(id)}
	ref := refContinuation{text: bytes.Clone(text), id: bytes.Clone(id)}
	compareObservations(t, &c, &ref, chunks...)
}

// compareObservations feeds chunks to c and to the naive model ref, which
// start in the same state, and reports how they differ.
func compareObservations(t *testing.T, c *continuation, ref *refContinuation, chunks ...[]byte) {
	t.Helper()
	for i, ch := range chunks {
		c.observe(ch)
		ref.observe(ch)
		if !bytes.Equal(c.text, ref.text) {
			t.Fatalf("chunk %d %q: text %q, json.Unmarshal's %q", i, ch, clip(c.text), clip(ref.text))
		}
		if c.stop != ref.stop {
			t.Fatalf("chunk %d %q: stop %q, json.Unmarshal's %q", i, ch, c.stop, ref.stop)
		}
		for _, v := range [...]struct {
			name      string
			got, want json.RawMessage
		}{{"id", c.id, ref.id}, {"model", c.model, ref.model}, {"created", c.created, ref.created}} {
			if !bytes.Equal(v.got, v.want) || (v.got == nil) != (v.want == nil) {
				t.Fatalf("chunk %d %q: %s %q, json.Unmarshal's %q", i, ch, v.name, v.got, v.want)
			}
		}
	}
}

// clip shortens a text for a failure message.
func clip(b []byte) []byte {
	if len(b) > 80 {
		return b[len(b)-80:]
	}
	return b
}

// chunkShapes are chunks upstreams send and chunks no upstream should,
// each a reading that observe must share with json.Unmarshal.
var chunkShapes = []string{
	`{"id":"chatcmpl-9zX1","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}],"usage":null}`,
	`{"id":"chatcmpl-9zX1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
	`{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
	`{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":""}]}`,
	`{"id":"x","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":3,"total_tokens":22}}`,
	`{"choices":[{"delta":{"content":"no index"}}]}`,
	`{"choices":[{"index":1,"delta":{"content":"b"}}]}`,
	`{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}`,
	`{"choices":[{"index":0,"delta":{"content":"a"}},{"index":0,"delta":{"content":"b"}}]}`,
	`{"choices":[{"delta":{"content":"a"},"index":2}]}`,
	`{"choices":[{"finish_reason":"length","delta":{"content":"a"}}]}`,
	`{"choices":[{"index":-0,"delta":{"content":"minus zero"}}]}`,
	`{"choices":[{"index":0.0,"delta":{"content":"a"}}]}`,
	`{"choices":[{"index":1e0,"delta":{"content":"a"}}]}`,
	`{"choices":[{"index":"0","delta":{"content":"a"}}]}`,
	`{"choices":[{"index":null,"delta":{"content":"a"}}]}`,
	`{"choices":[{"index":9223372036854775807}]}`,
	`{"choices":[{"index":-9223372036854775808}]}`,
	`{"choices":[{"index":9223372036854775808}]}`,
	`{"choices":[{"index":-9223372036854775809}]}`,
	`{"choices":[{"index":00}]}`,
	`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":""}}]}}]}`,
	`{"choices":[{"delta":{"tool_calls":null,"function_call":null,"content":"a"}}]}`,
	`{"choices":[{"delta":{"function_call":{"name":"f"}}}]}`,
	`{"choices":[{"delta":{"tool_calls":[]}}]}`,
	`{"choices":[{"delta":{"content":null}}]}`,
	`{"choices":[{"delta":{"content":5}}]}`,
	`{"choices":[{"delta":{"content":"a"}},{"delta":{"content":5}}]}`,
	`{"choices":[{"delta":{"content":"a"}}],"usage":{"x":[1,2,}}`,
	`{"choices":[{"delta":{"content":"a"}}],"choices":null}`,
	`{"choices":[{"delta":{"content":"a"}}],"ID":"x"}`,
	`{"choices":[{"delta":{"content":"a"}}],"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	`{"choices":[{"delta":null}]}`,
	`{"choices":[null,{"delta":{"content":"after null"}}]}`,
	`{"choices":null}`,
	`{"choices":{}}`,
	`{"choices":[1]}`,
	`{"choices":[{"delta":[]}]}`,
	`{"choices":[{"finish_reason":1}]}`,
	`null`,
	` null `,
	`nul`,
	`[]`,
	`"text"`,
	`{}`,
	``,
	`{`,
	`{"id":1}{"id":2}`,
	`{"id":1,}`,
	`{"id":{"a":[true,false,null,-1.5e+3]},"model":["m"],"created":null}`,
	`{"id":"a","id":"b"}`,
	`{"ID":"a"}`,
	`{"Choices":[{"index":1}]}`,
	`{"choices":[{"Index":1}]}`,
	`{"choices":[{"delta":{"Content":"a"}}]}`,
	`{"choice\u0073":[{"index":1}]}`,
	`{"choiceſ":[{"index":1}]}`,
	`{"choices":[{"ındex":1}]}`,
	`{"choices":[{"index":1}],"choices":[{"delta":{"content":"a"}}]}`,
	`{"choices":[{"index":0,"index":1}]}`,
	`{"choices":[{"delta":{"content":"a"},"delta":{"tool_calls":null}}]}`,
	`{"choices":[{"delta":{"content":"a","content":"b"}}]}`,
	`{"choices":[{"delta":{"content":"\"\\\/\b\f\n\r\t\u00e9\u20ac\ud83d\ude00"}}]}`,
	`{"choices":[{"delta":{"content":"\ud83d lone high, \ude00 lone low, \ud83d\u0041 broken pair"}}]}`,
	`{"choices":[{"delta":{"content":"\ud83d\ud83d\ude00"}}]}`,
	`{"choices":[{"delta":{"content":"\ud83d"}}]}`,
	"{\"choices\":[{\"delta\":{\"content\":\"invalid \xff\xfe UTF-8 \xed\xa0\x80 and a cut \xe2\x82\"}}]}",
	"{\"choices\":[{\"delta\":{\"content\":\"valid UTF-8 é € 😀\"}}]}",
	"{\"choices\":[{\"delta\":{\"content\":\"a control \x01 character\"}}]}",
	`{"choices":[{"delta":{"content":"bad escape \x"}}]}`,
	`{"choices":[{"delta":{"content":"short \u12"}}]}`,
	`{"choices":[{"delta":{"content":"unterminated`,
	`{"a":01}`,
	`{"a":1.}`,
	`{"a":-}`,
	`{"a":1e}`,
	`{"a":tru}`,
	`{"a":truex}`,
	`{"a" 1}`,
	`{a:1}`,
	"\t{\r\n\"id\" : \"spaced\" ,\n\"choices\" : [ { \"delta\" : { \"content\" : \"x\" } } ] }\n",
	`{"id":"a"} x`,
	`{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	`{"x":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
	`{"x":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
}

// TestObserveMatchesReference checks observe against json.Unmarshal on
// every shape: alone, twice in a row (the first chunk's id is kept), after
// the naive model's chunk, and with the text nearly full.
func TestObserveMatchesReference(t *testing.T) {
	full := bytes.Repeat([]byte("x"), MaxContinuationText-2)
	for _, s := range chunkShapes {
		b := []byte(s)
		sameObservations(t, nil, nil, b)
		sameObservations(t, nil, nil, b, b)
		sameObservations(t, []byte("start"), nil, []byte(chunkShapes[0]), b)
		sameObservations(t, full, json.RawMessage(`"kept"`), b)
	}
}

// TestObserveReadsCommonChunks checks that the chunks upstreams send take
// chunkReader's way, not the slow path, and cost no allocation once the
// first chunk's values are kept and the text has room.
func TestObserveReadsCommonChunks(t *testing.T) {
	common := []string{
		`{"id":"chatcmpl-9zX1","object":"chat.completion.chunk","created":1767225600,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":" token"},"finish_reason":null}],"usage":null}`,
		`{"id":"chatcmpl-9zX1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
		`{"id":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
		`{"id":"x","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":3,"total_tokens":22}}`,
		`{"choices":[{"index":1,"delta":{"content":"b"}}]}`,
		`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":""}}]}}]}`,
		`{"choices":[{"delta":{"content":"\"\\\/\b\f\n\r\t\u00e9\u20ac\ud83d\ude00 and é"}}]}`,
		"{\"choices\":[{\"delta\":{\"content\":\"bad \xff UTF-8\"}}]}",
	}
	for _, s := range common {
		r := chunkReader{scanner: scanner{b: []byte(s)}}
		if res := r.read(); res != chunkOK {
			t.Errorf("%s: read %v, want chunkOK", s, res)
		}
		c := continuation{text: make([]byte, 0, 1<<10), id: json.RawMessage(`"x"`)}
		data := []byte(s)
		if n := testing.AllocsPerRun(100, func() {
			c.text, c.stop = c.text[:0], ""
			c.observe(data)
		}); n != 0 {
			t.Errorf("%s: observe allocates %v times", s, n)
		}
	}
}

// FuzzContinuationObserve checks that observe reads any chunk as
// json.Unmarshal does: the same text, stop and first chunk's values.
func FuzzContinuationObserve(f *testing.F) {
	for _, s := range chunkShapes {
		f.Add([]byte(s))
	}
	// The text nearly full, in buffers with room to spare, so that an
	// input costs no copy of a megabyte.
	const nearlyFull = MaxContinuationText - 8
	mine := bytes.Repeat([]byte("x"), nearlyFull+64<<10)
	theirs := bytes.Clone(mine)
	f.Fuzz(func(t *testing.T, data []byte) {
		sameObservations(t, nil, nil, data)
		sameObservations(t, nil, nil, data, data)
		compareObservations(t,
			&continuation{text: mine[:nearlyFull], id: json.RawMessage(`"kept"`)},
			&refContinuation{text: theirs[:nearlyFull], id: json.RawMessage(`"kept"`)},
			data)
		// The same bytes as a stream of chunks, one a line.
		sameObservations(t, nil, nil, bytes.Split(data, []byte("\n"))...)
	})
}
