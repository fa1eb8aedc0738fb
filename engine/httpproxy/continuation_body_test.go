package httpproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/reroute-go/reroute/policy"
)

const (
	prefill = policy.ContinuePrefill
	prefix  = policy.ContinuePrefix
	cfm     = policy.ContinueFinalMessage
)

// Every dialect's body, byte for byte, for hand-written inputs.
func TestContinuationBody(t *testing.T) {
	const (
		minimal = `{"model":"claude-3-5-sonnet","messages":[{"role":"user","content":"Say hello"}],"stream":true}`
		// A finished tool round: the assistant's tool call, the tool's
		// result, and the answer that was being streamed after it.
		tools = `{"model":"m","stream":true,"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],` +
			`"messages":[{"role":"user","content":"Weather in Paris?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},` +
			`{"role":"tool","tool_call_id":"call_1","content":"{\"temp\":18}"}],"tool_choice":"auto"}`
		toolsHead = `{"model":"m","stream":true,"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],` +
			`"messages":[{"role":"user","content":"Weather in Paris?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},` +
			`{"role":"tool","tool_call_id":"call_1","content":"{\"temp\":18}"}`
		unicode = `{"model":"m","messages":[{"role":"system","content":"Antworte auf Deutsch \u00fcber Gr\u00f6\u00dfe"},{"role":"user","content":"Größe von 😀?"}]}`
		spaced  = "{\n  \"stream\" : true ,\n  \"messages\" : [\n    { \"content\" : \"hi\" , \"role\" : \"user\" }\n  ] ,\n  \"model\" : \"m\"\n}\n"
		// The client's own prefill: the answer starts with its text.
		own     = `{"model":"m","messages":[{"role":"user","content":"Three colours as JSON"},{"role":"assistant","content":"{\"colours\": ["}],"stream":true}`
		ownHead = `{"model":"m","messages":[{"role":"user","content":"Three colours as JSON"},{"role":"assistant","content":"{\"colours\": [`
	)
	// The delivered text needs every kind of escape.
	const weird = "a \"q\" \\ \n\t\x01 \u2028\u2029 😀 \xff<&>"
	const weirdJSON = `a \"q\" \\ \n\t\u0001 \u2028\u2029 😀 \ufffd<&>`
	tests := []struct {
		name string
		d    policy.Continuation
		body string
		text string
		want string
	}{
		{"minimal prefill", prefill, minimal, "Hello, wor",
			`{"model":"claude-3-5-sonnet","messages":[{"role":"user","content":"Say hello"},{"role":"assistant","content":"Hello, wor"}],"stream":true}`},
		{"minimal prefix", prefix, minimal, "Hello, wor",
			`{"model":"claude-3-5-sonnet","messages":[{"role":"user","content":"Say hello"},{"role":"assistant","content":"Hello, wor","prefix":true}],"stream":true}`},
		{"minimal continue_final_message", cfm, minimal, "Hello, wor",
			`{"model":"claude-3-5-sonnet","messages":[{"role":"user","content":"Say hello"},{"role":"assistant","content":"Hello, wor"}],"stream":true,"continue_final_message":true,"add_generation_prompt":false}`},

		{"tools prefill", prefill, tools, "It is 18 °C in Paris",
			toolsHead + `,{"role":"assistant","content":"It is 18 °C in Paris"}],"tool_choice":"auto"}`},
		{"tools prefix", prefix, tools, "It is 18 °C",
			toolsHead + `,{"role":"assistant","content":"It is 18 °C","prefix":true}],"tool_choice":"auto"}`},
		{"tools continue_final_message", cfm, tools, "It is",
			toolsHead + `,{"role":"assistant","content":"It is"}],"tool_choice":"auto","continue_final_message":true,"add_generation_prompt":false}`},

		{"unicode prefill", prefill, unicode, weird,
			`{"model":"m","messages":[{"role":"system","content":"Antworte auf Deutsch \u00fcber Gr\u00f6\u00dfe"},{"role":"user","content":"Größe von 😀?"},{"role":"assistant","content":"` + weirdJSON + `"}]}`},
		{"unicode prefix", prefix, unicode, "Die Größe",
			`{"model":"m","messages":[{"role":"system","content":"Antworte auf Deutsch \u00fcber Gr\u00f6\u00dfe"},{"role":"user","content":"Größe von 😀?"},{"role":"assistant","content":"Die Größe","prefix":true}]}`},
		{"unicode continue_final_message", cfm, unicode, weird,
			`{"model":"m","messages":[{"role":"system","content":"Antworte auf Deutsch \u00fcber Gr\u00f6\u00dfe"},{"role":"user","content":"Größe von 😀?"},{"role":"assistant","content":"` + weirdJSON + `"}],"continue_final_message":true,"add_generation_prompt":false}`},

		{"whitespace and member order prefill", prefill, spaced, "Hel",
			"{\n  \"stream\" : true ,\n  \"messages\" : [\n    { \"content\" : \"hi\" , \"role\" : \"user\" },{\"role\":\"assistant\",\"content\":\"Hel\"}\n  ] ,\n  \"model\" : \"m\"\n}\n"},
		{"whitespace and member order prefix", prefix, spaced, "Hel",
			"{\n  \"stream\" : true ,\n  \"messages\" : [\n    { \"content\" : \"hi\" , \"role\" : \"user\" },{\"role\":\"assistant\",\"content\":\"Hel\",\"prefix\":true}\n  ] ,\n  \"model\" : \"m\"\n}\n"},
		{"whitespace and member order continue_final_message", cfm, spaced, "Hel",
			"{\n  \"stream\" : true ,\n  \"messages\" : [\n    { \"content\" : \"hi\" , \"role\" : \"user\" },{\"role\":\"assistant\",\"content\":\"Hel\"}\n  ] ,\n  \"model\" : \"m\",\"continue_final_message\":true,\"add_generation_prompt\":false\n}\n"},

		{"own prefill joined, prefill", prefill, own, `"red", "gr`,
			ownHead + `\"red\", \"gr"}],"stream":true}`},
		{"own prefill joined, prefix", prefix, own, `"red", "gr`,
			ownHead + `\"red\", \"gr","prefix":true}],"stream":true}`},
		{"own prefill joined, continue_final_message", cfm, own, `"red"`,
			ownHead + `\"red\""}],"stream":true,"continue_final_message":true,"add_generation_prompt":false}`},
		{"own prefill with prefix false, prefix", prefix,
			`{"messages":[{"role":"user","content":"q"},{ "prefix" : false, "role":"assistant","content":"A"}]}`, "B",
			`{"messages":[{"role":"user","content":"q"},{ "prefix" : true, "role":"assistant","content":"AB"}]}`},
		{"own prefill with prefix true, prefix", prefix,
			`{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"A","prefix":true}]}`, "B",
			`{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"AB","prefix":true}]}`},
		{"own prefill with tool_calls empty", prefill,
			`{"messages":[{"role":"assistant","content":"A","tool_calls":[ ]}]}`, "B",
			`{"messages":[{"role":"assistant","content":"AB","tool_calls":[ ]}]}`},

		{"existing dialect members replaced", cfm,
			`{"model":"m","add_generation_prompt":true,"messages":[{"role":"user","content":"x"}],"continue_final_message":false,"add_generation_prompt" : null}`, "y",
			`{"model":"m","add_generation_prompt":false,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}],"continue_final_message":true,"add_generation_prompt" : false}`},
		{"only one dialect member present", cfm,
			`{"continue_final_message":true,"messages":[{"role":"user","content":"x"}]}`, "y",
			`{"continue_final_message":true,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}],"add_generation_prompt":false}`},
		{"prefill leaves dialect members alone", prefill,
			`{"add_generation_prompt":true,"messages":[{"role":"user","content":"x"}]}`, "y",
			`{"add_generation_prompt":true,"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y"}]}`},

		{"nested messages keys untouched", prefill,
			`{"metadata":{"messages":[1]},"messages":[{"role":"user","content":"]}{\"messages\":["}],"x":{"messages":[]}}`, "z",
			`{"metadata":{"messages":[1]},"messages":[{"role":"user","content":"]}{\"messages\":["},{"role":"assistant","content":"z"}],"x":{"messages":[]}}`},
		{"empty messages", prefill, `{"messages":[ ]}`, "z", `{"messages":[{"role":"assistant","content":"z"} ]}`},
		{"escaped keys", prefix, `{"m\u0065ssages":[{"r\u006fle":"assistant","c\u006fntent":"a\u00e9"}]}`, "b",
			`{"m\u0065ssages":[{"r\u006fle":"assistant","c\u006fntent":"a\u00e9b","prefix":true}]}`},
		{"roles that disagree are not the client's prefill", prefill,
			`{"messages":[{"role":"assistant","role":"user","content":"a"}]}`, "b",
			`{"messages":[{"role":"assistant","role":"user","content":"a"},{"role":"assistant","content":"b"}]}`},
		{"last message not an object", prefill, `{"messages":["odd"]}`, "b", `{"messages":["odd",{"role":"assistant","content":"b"}]}`},

		{"empty text is the request as it was", cfm, minimal, "", minimal},
		{"empty text after the client's prefill adds only the markers", prefix, own, "",
			ownHead + `","prefix":true}],"stream":true}`},
		{"empty text after the client's prefill, continue_final_message", cfm, own, "",
			ownHead + `"}],"stream":true,"continue_final_message":true,"add_generation_prompt":false}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.body)
			got, err := continuationBody(in, tt.d, tt.text)
			if err != nil {
				t.Fatalf("continuationBody: %v", err)
			}
			if string(got) != tt.want {
				t.Fatalf("continuationBody =\n%s\nwant\n%s", got, tt.want)
			}
			if string(in) != tt.body {
				t.Fatal("the input body was modified")
			}
			if !json.Valid(got) {
				t.Fatal("the result is not JSON")
			}
			if len(got) > 0 && len(in) > 0 && &got[0] == &in[0] {
				t.Fatal("the result aliases the input")
			}
		})
	}
}

func TestContinuationBodyErrors(t *testing.T) {
	tests := []struct {
		name string
		d    policy.Continuation
		body string
		want error // nil: any error whose message contains msg
		msg  string
	}{
		{"no messages", prefill, `{"model":"m","prompt":"hi"}`, errNoMessages, ""},
		{"messages an object", prefill, `{"messages":{"role":"user","content":"hi"}}`, errMessagesType, ""},
		{"messages a string", prefix, `{"messages":"hi"}`, errMessagesType, ""},
		{"messages null", cfm, `{"messages":null}`, errMessagesType, ""},
		{"messages twice", prefill, `{"messages":[],"messages":[{"role":"user","content":"x"}]}`, errMessagesTwice, ""},
		{"invalid JSON", prefill, `{"messages":[{"role":"user","content":"x"}]`, errNotObject, ""},
		{"trailing garbage", prefill, `{"messages":[]} {}`, errNotObject, ""},
		{"not an object", prefill, `[{"messages":[]}]`, errNotObject, ""},
		{"empty", prefill, ``, errNotObject, ""},
		{"none", policy.ContinueNone, `{"messages":[]}`, errCannotContinue, ""},
		{"unset", "", `{"messages":[]}`, errCannotContinue, ""},
		{"unknown dialect", "suffix", `{"messages":[]}`, nil, `"suffix"`},
		{"own prefill with content parts", prefill, `{"messages":[{"role":"assistant","content":[{"type":"text","text":"A"}]}]}`, errPrefillContent, ""},
		{"own prefill with null content", prefix, `{"messages":[{"role":"assistant","content":null}]}`, errPrefillContent, ""},
		{"own prefill without content", prefix, `{"messages":[{"role":"assistant"}]}`, errPrefillContent, ""},
		{"own prefill with tool_calls", cfm, `{"messages":[{"role":"assistant","content":"A","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, errPrefillToolCalls, ""},
		{"own prefill with content twice", prefill, `{"messages":[{"role":"assistant","content":"A","content":"B"}]}`, errPrefillTwice, ""},
		{"own prefill with role twice", prefill, `{"messages":[{"role":"assistant","content":"A","role":"assistant"}]}`, errPrefillTwice, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := continuationBody([]byte(tt.body), tt.d, "text")
			if got != nil || err == nil {
				t.Fatalf("continuationBody = %q, %v; want an error", got, err)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %q, want %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q does not name %s", err, tt.msg)
			}
		})
	}
}

func TestNotContinuable(t *testing.T) {
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		body string
		want string // "" continuable; otherwise the reason
	}{
		{`{"model":"m",` + msgs + `,"stream":true}`, ""},
		{`{` + msgs + `,"n":1,"logprobs":false,"top_logprobs":0,"response_format":{"type":"text"},"tool_choice":"auto","echo":false,"modalities":["text"],"audio":null}`, ""},
		{`{` + msgs + `,"n":null,"stop":["\n\n","END"],"max_tokens":64,"max_completion_tokens":64,"seed":7,"temperature":0}`, ""},
		{`{` + msgs + `,"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"auto"},"parallel_tool_calls":true}`, ""},
		{`{` + msgs + `,"tool_choice":"none","stream_options":{"include_usage":true}}`, ""},
		{`{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"A"}]}`, ""},
		{`{"messages":[]}`, ""},

		{`{` + msgs + `,"n":2}`, reasonChoices},
		{`{"n":3.0,` + msgs + `}`, reasonChoices},
		{`{` + msgs + `,"logprobs":true}`, reasonLogprobs},
		{`{` + msgs + `,"top_logprobs":5}`, reasonLogprobs},
		{`{` + msgs + `,"response_format":{"type":"json_object"}}`, reasonFormat},
		{`{` + msgs + `,"response_format":{"json_schema":{"name":"x","schema":{}},"type":"json_schema"}}`, reasonFormat},
		{`{` + msgs + `,"response_format":{"type":"grammar","grammar":"root ::= x"}}`, reasonFormat},
		{`{` + msgs + `,"guided_json":{"type":"object"}}`, reasonConstrained},
		{`{` + msgs + `,"guided_choice":["yes","no"]}`, reasonConstrained},
		{`{` + msgs + `,"structured_outputs":{"regex":"[0-9]+"}}`, reasonConstrained},
		{`{` + msgs + `,"grammar":"root ::= x"}`, reasonConstrained},
		{`{` + msgs + `,"tool_choice":"required"}`, reasonToolChoice},
		{`{` + msgs + `,"tool_choice":{"type":"function","function":{"name":"f"}}}`, reasonToolChoice},
		{`{` + msgs + `,"echo":true}`, reasonEcho},
		{`{` + msgs + `,"modalities":["text","audio"]}`, reasonAudio},
		{`{` + msgs + `,"audio":{"voice":"alloy","format":"pcm16"}}`, reasonAudio},

		{`{"model":"m","prompt":"hi"}`, errNoMessages.Error()},
		{`{"messages":{"role":"user"}}`, errMessagesType.Error()},
		{`{"messages":[],"messages":[]}`, errMessagesTwice.Error()},
		{`{"messages":[{"role":"assistant","content":[{"type":"text","text":"A"}]}]}`, errPrefillContent.Error()},
		{`{"messages":[{"role":"assistant","content":"A","tool_calls":[{"id":"c"}]}]}`, errPrefillToolCalls.Error()},
		{`{"messages":[`, reasonNotObject},
		{`[]`, reasonNotObject},
	}
	for _, tt := range tests {
		if got := notContinuable([]byte(tt.body)); got != tt.want {
			t.Errorf("notContinuable(%s) = %q, want %q", tt.body, got, tt.want)
		}
	}
}

// Provider answers to a continuation request: the ones that reject the
// trailing assistant message (or the dialect's members), and ordinary
// failures that must not be read so.
func TestRejectsContinuation(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   bool
	}{
		{"anthropic claude 4.6 and later", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"This model does not support assistant message prefill. The conversation must end with a user message."},"request_id":"req_011CcmtaL3xqBq4LcX1d2fZp"}`, true},
		{"anthropic prefill ending with white space", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"messages: final assistant content cannot end with trailing whitespace"},"request_id":"req_011CUvdPgnreuT3DxJPFAoqt"}`, true},
		{"anthropic prefill with thinking on", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"messages.1.content.0.type: Expected ` + "`thinking`" + ` or ` + "`redacted_thinking`" + `, but found ` + "`text`" + `. When ` + "`thinking`" + ` is enabled, a final ` + "`assistant`" + ` message must start with a thinking block (preceeding the lastmost set of ` + "`tool_use`" + ` and ` + "`tool_result`" + ` blocks). We recommend you include thinking blocks from previous turns. To avoid this requirement, disable ` + "`thinking`" + `."}}`, true},
		{"mistral without prefix", 400, `{"object":"error","message":"Expected last role User or Tool (or Assistant with prefix True) for serving but got assistant","type":"invalid_request_message_error","param":null,"code":null}`, true},
		{"deepseek outside the beta endpoint", 400, `{"error":{"message":"The last message of deepseek-reasoner must be a user message, or an assistant message with prefix mode on (refer to https://api-docs.deepseek.com/guides/chat_prefix_completion).","type":"invalid_request_error","param":null,"code":"invalid_request_error"}}`, true},
		{"vllm without continue_final_message", 400, `{"object":"error","message":"Cannot set add_generation_prompt to True when the last message is from the assistant. Consider using continue_final_message instead.","type":"BadRequestError","param":null,"code":400}`, true},
		{"vllm, newer error shape", 400, `{"error":{"message":"continue_final_message and add_generation_prompt are not compatible. Use continue_final_message when you want the model to continue the final message, and add_generation_prompt when you want to add a header that will prompt it to start a new assistant message instead.","type":"BadRequestError","param":null,"code":400}}`, true},
		{"llama.cpp server with thinking", 400, `{"error":{"code":400,"message":"Assistant response prefill is incompatible with enable_thinking.","type":"invalid_request_error"}}`, true},
		{"openrouter wrapping anthropic", 400, `{"error":{"message":"Provider returned error","code":400,"metadata":{"raw":"{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":\"This model does not support assistant message prefill. The conversation must end with a user message.\"}}","provider_name":"Anthropic"}}}`, true},
		{"unknown continue_final_message", 400, `{"error":{"message":"Unrecognized request argument supplied: continue_final_message","type":"invalid_request_error","param":null,"code":null}}`, true},
		{"unknown prefix member", 400, `{"error":{"message":"'messages.1' : for 'role:assistant' the following must be satisfied[('messages.1' : property 'prefix' is unsupported)]","type":"invalid_request_error"}}`, true},
		{"prefix not allowed", 400, `{"error":{"message":"Additional properties are not allowed ('prefix' was unexpected) - 'messages.1'","type":"invalid_request_error","param":null,"code":null}}`, true},
		{"validation error on prefix", 422, `{"detail":[{"type":"extra_forbidden","loc":["body","messages",1,"prefix"],"msg":"Extra inputs are not permitted","input":true}]}`, true},
		{"plain text", 400, `This model does not support assistant message prefill.`, true},

		{"context length", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 205351 tokens > 200000 maximum"}}`, false},
		{"bad parameter", 400, `{"error":{"message":"Invalid value for 'temperature': must be between 0 and 2","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}`, false},
		{"roles must alternate", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"messages: roles must alternate between \"user\" and \"assistant\", but found multiple \"user\" roles in a row"}}`, false},
		{"content policy", 400, `{"error":{"message":"Invalid prompt: your prompt was flagged as potentially violating our usage policy.","type":"invalid_request_error","param":null,"code":"invalid_prompt"}}`, false},
		{"a prefix that is not the dialect's", 400, `{"error":{"message":"Invalid model prefix 'foo/'","type":"invalid_request_error"}}`, false},
		{"validation error elsewhere", 422, `{"detail":[{"type":"extra_forbidden","loc":["body","foo"],"msg":"Extra inputs are not permitted","input":1}]}`, false},
		{"missing field", 422, `{"detail":[{"type":"missing","loc":["body","messages"],"msg":"Field required","input":{}}]}`, false},
		{"rate limited with the same words", 429, `{"type":"error","error":{"type":"invalid_request_error","message":"This model does not support assistant message prefill."}}`, false},
		{"server error with the same words", 500, `{"error":{"message":"This model does not support assistant message prefill."}}`, false},
		{"not found", 404, `{"error":{"message":"The model 'x' does not exist","type":"invalid_request_error","code":"model_not_found"}}`, false},
		{"html", 400, `<html><body>400 Bad Request</body></html>`, false},
		{"empty", 400, ``, false},
	}
	for _, tt := range tests {
		if got := rejectsContinuation(tt.status, []byte(tt.body)); got != tt.want {
			t.Errorf("%s: rejectsContinuation = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// FuzzContinuationBody: for any body and any text, continuationBody either
// refuses for a reason a plain decoder confirms (and notContinuable
// refuses the body too), or returns valid JSON
// that decodes to the input with exactly the dialect's change: one more
// message (or the text joined to the last message's content), the
// dialect's members, and every other member as it was. For prefill and
// prefix, the bytes outside the change are the input's.
func FuzzContinuationBody(f *testing.F) {
	for _, seed := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}`,
		"{ \"messages\" : [ {\"role\":\"user\",\"content\":\"a\"} ] ,\n\"continue_final_message\":false }",
		`{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"{\"a\": ["}]}`,
		`{"messages":[{"role":"assistant","content":"x","prefix":false,"prefix":null}]}`,
		`{"messages":[]}`,
		`{"messages":[{"role":"assistant","content":[{"type":"text","text":"A"}]}]}`,
		`{"messages":[{"role":"assistant","role":"user","content":"a"}],"add_generation_prompt":true}`,
		`{"m\u0065ssages":[{"r\u006fle":"assistant","content":"\ud83d"}]}`,
		`{"messages":{}}`,
		`{"messages":[],"messages":[]}`,
		`{"messages":[1,"two",null]}`,
		`[]`,
		`{"messages":[`,
	} {
		f.Add([]byte(seed), "Hello, \"wor\u2028ld\"\x00\xff", uint8(0))
		f.Add([]byte(seed), "", uint8(1))
		f.Add([]byte(seed), "\\u00e9 😀", uint8(2))
	}
	dialects := [...]policy.Continuation{prefill, prefix, cfm}
	f.Fuzz(func(t *testing.T, body []byte, text string, di uint8) {
		d := dialects[int(di)%len(dialects)]
		in := bytes.Clone(body)
		out, err := continuationBody(body, d, text)
		if !bytes.Equal(in, body) {
			t.Fatal("the input body was modified")
		}
		// The check made when the request arrives agrees with the
		// builder: a request it passes can always be built.
		if reason := notContinuable(body); reason == "" && err != nil {
			t.Fatalf("notContinuable passed a body continuationBody refuses (%v):\n%q", err, body)
		}
		rejectsContinuation(400, body) // never panics, whatever the body
		ref, refErr := naiveTail(body)
		if err != nil {
			if out != nil {
				t.Fatalf("an error with a result: %v", err)
			}
			if refErr == nil {
				t.Fatalf("refused a body a decoder can continue: %v\n%q", err, body)
			}
			return
		}
		if refErr != nil {
			t.Fatalf("continued a body a decoder refuses (%v):\n%q", refErr, body)
		}
		if !json.Valid(out) {
			t.Fatalf("the result is not JSON:\n%q", out)
		}
		if text == "" && !ref.prefill {
			if !bytes.Equal(out, body) {
				t.Fatalf("empty text changed the body:\n%q\n%q", body, out)
			}
			return
		}
		checkContinued(t, body, out, d, text, ref)
	})
}

// naiveRef is what a plain decoder says of a body's messages.
type naiveRef struct {
	msgs    []json.RawMessage
	prefill bool // the last message is an assistant message to continue
}

// naiveTail decides with encoding/json alone whether body can be
// continued: a JSON object with one "messages" array whose last element,
// when it is an assistant message, has one string content and no
// tool_calls.
func naiveTail(body []byte) (naiveRef, error) {
	var r naiveRef
	if !json.Valid(body) {
		return r, errors.New("not JSON")
	}
	top, ok := objectMembers(body)
	if !ok {
		return r, errors.New("not an object")
	}
	n := 0
	for _, m := range top {
		if m.k == "messages" {
			n++
			_ = json.Unmarshal(m.v, &r.msgs)
		}
	}
	if n != 1 {
		return r, errors.New("not one messages")
	}
	if r.msgs == nil {
		return r, errors.New("messages is not an array")
	}
	if len(r.msgs) == 0 {
		return r, nil
	}
	last := r.msgs[len(r.msgs)-1]
	ms, ok := objectMembers(last)
	if !ok {
		return r, nil
	}
	var roles, contents, calls int
	var content any
	assistant := true
	for _, m := range ms {
		var v any
		_ = json.Unmarshal(m.v, &v)
		switch m.k {
		case "role":
			roles++
			assistant = assistant && v == "assistant"
		case "content":
			contents++
			content = v
		case "tool_calls":
			if a, isArray := v.([]any); v != nil && (!isArray || len(a) > 0) {
				if o, isObj := v.(map[string]any); !isObj || len(o) > 0 {
					calls++
				}
			}
		}
	}
	if roles == 0 || !assistant {
		return r, nil
	}
	switch _, isString := content.(string); {
	case roles > 1 || contents > 1:
		return r, errors.New("role or content twice")
	case calls > 0:
		return r, errors.New("tool_calls")
	case !isString:
		return r, errors.New("content is not a string")
	}
	r.prefill = true
	return r, nil
}

type rawMember struct {
	k string
	v json.RawMessage
}

// objectMembers lists the top-level members of a JSON object, repeats
// included, in order.
func objectMembers(b []byte) ([]rawMember, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var ms []rawMember
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, false
		}
		var v json.RawMessage
		if dec.Decode(&v) != nil {
			return nil, false
		}
		ms = append(ms, rawMember{k.(string), v})
	}
	return ms, true
}

// checkContinued asserts that out is body with the dialect's change.
func checkContinued(t *testing.T, body, out []byte, d policy.Continuation, text string, ref naiveRef) {
	t.Helper()
	var want string // the text as a decoder reads it back
	if err := json.Unmarshal(appendJSONString(nil, text), &want); err != nil {
		t.Fatalf("the escaped text is not a JSON string: %v", err)
	}
	if utf8.ValidString(text) && want != text {
		t.Fatalf("the text reads back as %q, want %q", want, text)
	}
	var inTop, outTop map[string]json.RawMessage
	if json.Unmarshal(body, &inTop) != nil || json.Unmarshal(out, &outTop) != nil {
		t.Fatalf("not objects:\n%q\n%q", body, out)
	}
	var outMsgs []json.RawMessage
	if err := json.Unmarshal(outTop["messages"], &outMsgs); err != nil {
		t.Fatalf("messages of the result: %v\n%q", err, out)
	}
	if d == cfm {
		if string(outTop["continue_final_message"]) != "true" || string(outTop["add_generation_prompt"]) != "false" {
			t.Fatalf("dialect members %s, %s:\n%q", outTop["continue_final_message"], outTop["add_generation_prompt"], out)
		}
		delete(outTop, "continue_final_message")
		delete(outTop, "add_generation_prompt")
		delete(inTop, "continue_final_message")
		delete(inTop, "add_generation_prompt")
	}
	delete(inTop, "messages")
	delete(outTop, "messages")
	if !reflect.DeepEqual(rawStrings(inTop), rawStrings(outTop)) {
		t.Fatalf("other members changed:\n%q\n%q", body, out)
	}
	n := len(ref.msgs)
	if !ref.prefill {
		if len(outMsgs) != n+1 {
			t.Fatalf("%d messages, want %d:\n%q", len(outMsgs), n+1, out)
		}
		for i := range n {
			if !bytes.Equal(outMsgs[i], ref.msgs[i]) {
				t.Fatalf("message %d changed: %s → %s", i, ref.msgs[i], outMsgs[i])
			}
		}
		var added map[string]any
		if err := json.Unmarshal(outMsgs[n], &added); err != nil {
			t.Fatalf("the new message: %v", err)
		}
		wantMsg := map[string]any{"role": "assistant", "content": want}
		if d == prefix {
			wantMsg["prefix"] = true
		}
		if !reflect.DeepEqual(added, wantMsg) {
			t.Fatalf("the new message is %s, want %v", outMsgs[n], wantMsg)
		}
		if d != cfm {
			// Exactly one insertion: the new message, with its comma.
			ins := []byte(`{"role":"assistant","content":` + string(appendJSONString(nil, text)))
			if d == prefix {
				ins = append(ins, `,"prefix":true`...)
			}
			ins = append(ins, '}')
			if n > 0 {
				ins = append([]byte{','}, ins...)
			}
			if len(out) != len(body)+len(ins) || !insertedAt(body, out, ins) {
				t.Fatalf("not body with %q inserted:\n%q\n%q", ins, body, out)
			}
		}
		return
	}
	if len(outMsgs) != n {
		t.Fatalf("%d messages, want %d (joined):\n%q", len(outMsgs), n, out)
	}
	for i := range n - 1 {
		if !bytes.Equal(outMsgs[i], ref.msgs[i]) {
			t.Fatalf("message %d changed: %s → %s", i, ref.msgs[i], outMsgs[i])
		}
	}
	var inLast, outLast map[string]any
	if json.Unmarshal(ref.msgs[n-1], &inLast) != nil || json.Unmarshal(outMsgs[n-1], &outLast) != nil {
		t.Fatalf("the last message is not an object")
	}
	if got, wantJoined := outLast["content"], inLast["content"].(string)+want; got != wantJoined {
		t.Fatalf("joined content %q, want %q", got, wantJoined)
	}
	inLast["content"] = outLast["content"]
	if d == prefix {
		if outLast["prefix"] != true {
			t.Fatalf("prefix = %v after joining, want true", outLast["prefix"])
		}
		inLast["prefix"] = true
	}
	if !reflect.DeepEqual(inLast, outLast) {
		t.Fatalf("the last message changed beyond the join:\n%v\n%v", inLast, outLast)
	}
}

// insertedAt reports whether out is body with ins inserted at some offset.
func insertedAt(body, out, ins []byte) bool {
	if len(out) != len(body)+len(ins) {
		return false
	}
	p := 0 // the common prefix
	for p < len(body) && body[p] == out[p] {
		p++
	}
	s := 0 // the common suffix, not overlapping the prefix
	for s < len(body) && body[len(body)-1-s] == out[len(out)-1-s] {
		s++
	}
	// out = body[:i] + ins + body[i:] for an i with i <= p and
	// len(body)-i <= s.
	for i := max(0, len(body)-s); i <= p; i++ {
		if bytes.Equal(out[i:i+len(ins)], ins) {
			return true
		}
	}
	return false
}

func rawStrings(m map[string]json.RawMessage) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}
