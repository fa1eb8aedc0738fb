package httpproxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/reroute-go/reroute/policy"
)

// This file builds continuation requests: the client's request with the
// text already delivered appended as the start of the answer, in the
// dialect of the target that continues (policy.Continuation); see
// docs/gateway.md#continuing-a-cut-stream.
//
// Like ReplaceModel it edits the body in place with the structural scanner
// of model.go instead of decoding and re-encoding it: prompt caching keys
// on the exact bytes of the prompt, and a continuation that re-serialized
// the messages would pay for the whole prompt again on a target that had
// it cached. Every byte of the client's messages is kept; the edits are
// insertions (the new message, the joined text, the dialect's members)
// and, for members the dialect owns, replaced values.

var (
	errCannotContinue = errors.New("the target cannot continue an answer (its continuation is none)")
	errNoMessages     = errors.New(`the request body has no top-level "messages"`)
	errMessagesType   = errors.New(`the request body's "messages" is not an array`)
	errMessagesTwice  = errors.New(`the request body gives "messages" more than once`)
	// The client's own trailing assistant message (its prefill) can be
	// continued only when the delivered text can be joined to it.
	errPrefillContent   = errors.New(`the last message is an assistant message whose "content" is not a string: the delivered text cannot be joined to it`)
	errPrefillToolCalls = errors.New(`the last message is an assistant message with "tool_calls": it is not the start of a text answer`)
	errPrefillTwice     = errors.New(`the last message gives "role" or "content" more than once`)
)

// continuationBody returns body (the client's request body, with the model
// already set for the continuing target) with text appended as the
// trailing assistant message in dialect d. Every byte outside the
// messages array is kept, except the members the dialect adds at the top
// level. It fails for a body that has no messages array, and for
// policy.ContinueNone.
//
// The dialects:
//
//   - prefill: {"role":"assistant","content":text} is appended to
//     messages;
//   - prefix: the same message with "prefix":true;
//   - continue_final_message: the same message as prefill, and the
//     top-level members "continue_final_message":true and
//     "add_generation_prompt":false (each occurrence's value replaced when
//     the body has them, added after the last member otherwise).
//
// When the last message is already an assistant message (the client's own
// prefill, which the answer continues), no message is added: text is
// joined to the end of its "content" string, and for prefix that message
// gets "prefix":true (added, or its values replaced). A trailing assistant
// message whose content is not a string (an array of parts, null), that
// carries tool_calls, or that repeats "role" or "content", is refused.
//
// An empty text adds nothing: the body is returned as it is (a plain
// retry of the request), or, after the client's own prefill, with only
// the dialect's markers.
//
// The messages already in the body keep their bytes; text is escaped as a
// JSON string (quotes, backslashes, control characters, U+2028 and
// U+2029; each byte of invalid UTF-8 becomes U+FFFD). The result never
// aliases body, and body is not modified. It is safe for concurrent use.
func continuationBody(body []byte, d policy.Continuation, text string) ([]byte, error) {
	switch d {
	case policy.ContinuePrefill, policy.ContinuePrefix, policy.ContinueFinalMessage:
	case policy.ContinueNone, "":
		return nil, errCannotContinue
	default:
		return nil, fmt.Errorf("unknown continuation %q: use none, prefill, prefix or continue_final_message", d)
	}
	if !json.Valid(body) {
		return nil, errNotObject
	}
	var (
		msgs    member
		nmsgs   int
		topEnd  int       // the end of the last top-level member's value
		flagBuf [4]member // continue_final_message and add_generation_prompt members
		flags   = flagBuf[:0]
	)
	if !scanTop(body, func(m member) bool {
		k := body[m.keyStart:m.keyEnd]
		switch {
		case keyIs(k, "messages"):
			msgs, nmsgs = m, nmsgs+1
		case d == policy.ContinueFinalMessage && (keyIs(k, "continue_final_message") || keyIs(k, "add_generation_prompt")):
			flags = append(flags, m)
		}
		topEnd = m.valEnd
		return true
	}) {
		return nil, errNotObject
	}
	t, err := messagesTail(body, msgs, nmsgs)
	if err != nil {
		return nil, err
	}
	if text == "" && !t.prefill {
		return append([]byte(nil), body...), nil
	}

	var editBuf [8]edit
	edits := editBuf[:0]
	switch {
	case !t.prefill:
		edits = append(edits, edit{start: t.insert, end: t.insert, kind: editMessage})
	case text != "":
		edits = append(edits, edit{start: t.contentEnd, end: t.contentEnd, kind: editText})
	}
	if d == policy.ContinuePrefix && t.prefill {
		if len(t.prefix) == 0 {
			edits = append(edits, edit{start: t.objEnd, end: t.objEnd, lit: `,"prefix":true`})
		}
		for _, m := range t.prefix {
			edits = append(edits, edit{start: m.valStart, end: m.valEnd, lit: "true"})
		}
	}
	if d == policy.ContinueFinalMessage {
		var cfm, agp bool
		for _, m := range flags {
			if keyIs(body[m.keyStart:m.keyEnd], "continue_final_message") {
				cfm = true
				edits = append(edits, edit{start: m.valStart, end: m.valEnd, lit: "true"})
			} else {
				agp = true
				edits = append(edits, edit{start: m.valStart, end: m.valEnd, lit: "false"})
			}
		}
		if !cfm {
			edits = append(edits, edit{start: topEnd, end: topEnd, lit: `,"continue_final_message":true`})
		}
		if !agp {
			edits = append(edits, edit{start: topEnd, end: topEnd, lit: `,"add_generation_prompt":false`})
		}
	}
	// A handful of edits: an insertion sort, stable, so that two
	// insertions at one offset keep the order they were made in.
	for i := 1; i < len(edits); i++ {
		for j := i; j > 0 && edits[j].start < edits[j-1].start; j-- {
			edits[j], edits[j-1] = edits[j-1], edits[j]
		}
	}

	out := make([]byte, 0, len(body)+escapedLen(text)+96)
	prev := 0
	for _, e := range edits {
		out = append(out, body[prev:e.start]...)
		switch e.kind {
		case editMessage:
			if !t.empty {
				out = append(out, ',')
			}
			out = append(out, `{"role":"assistant","content":"`...)
			out = appendJSONChars(out, text)
			out = append(out, '"')
			if d == policy.ContinuePrefix {
				out = append(out, `,"prefix":true`...)
			}
			out = append(out, '}')
		case editText:
			out = appendJSONChars(out, text)
		default:
			out = append(out, e.lit...)
		}
		prev = e.end
	}
	return append(out, body[prev:]...), nil
}

// escapedLen is the length of text escaped by appendJSONChars when text
// is ASCII or valid UTF-8 without U+2028 and U+2029 (otherwise a little
// more): the result is then allocated once. Counting costs a pass over
// text, less than growing the result while appending to it.
func escapedLen(text string) int {
	n := len(text)
	for i := 0; i < len(text); i++ {
		switch c := text[i]; {
		case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
			n++
		case c < 0x20:
			n += 5
		}
	}
	return n
}

// edit is one change continuationBody makes: the bytes [start, end) of the
// body are replaced by the new message, the escaped text, or lit.
type edit struct {
	start, end int
	kind       editKind
	lit        string
}

type editKind uint8

const (
	editLiteral editKind = iota
	editMessage          // a new trailing assistant message
	editText             // the delivered text, escaped, inside a string
)

// tail is what continuationBody needs to know of the end of the messages
// array. Offsets are into the whole body.
type tail struct {
	insert int  // just past the last element, or past '[' when there is none
	empty  bool // the array has no element
	// The last element is an assistant message (the client's own
	// prefill): where the closing quote of its content string is, where
	// its last member ends, and its "prefix" members.
	prefill    bool
	contentEnd int
	objEnd     int
	prefix     []member
}

// messagesTail finds the end of the messages array of a body json.Valid
// accepted (msgs is its member, n how many top-level "messages" there
// are), and reads its last element.
func messagesTail(body []byte, msgs member, n int) (t tail, err error) {
	switch {
	case n == 0:
		return t, errNoMessages
	case n > 1:
		// Decoders disagree on which of two members counts: one
		// upstream would see the continuation, another the original.
		return t, errMessagesTwice
	}
	s := scanner{b: body, i: msgs.valStart}
	if !s.eat('[') {
		return t, errMessagesType
	}
	t.insert, t.empty = s.i, true
	last := -1
	for {
		s.ws()
		if s.eat(']') {
			break
		}
		start := s.i
		if !s.value() {
			return t, errMessagesType // not after json.Valid
		}
		last, t.insert, t.empty = start, s.i, false
		s.ws()
		if !s.eat(',') && (s.i >= len(body) || body[s.i] != ']') {
			return t, errMessagesType // not after json.Valid
		}
	}
	if last < 0 || body[last] != '{' {
		return t, nil
	}
	el := body[last:t.insert]
	var (
		roles, contents int
		assistant       = true
		content         member
		toolCalls       bool
	)
	scanTop(el, func(m member) bool {
		k, v := el[m.keyStart:m.keyEnd], el[m.valStart:m.valEnd]
		switch {
		case keyIs(k, "role"):
			roles++
			assistant = assistant && v[0] == '"' && keyIs(v, "assistant")
		case keyIs(k, "content"):
			contents++
			content = m
		case keyIs(k, "tool_calls"):
			toolCalls = toolCalls || !emptyValue(v)
		case keyIs(k, "prefix"):
			t.prefix = append(t.prefix, member{keyStart: last + m.keyStart, keyEnd: last + m.keyEnd, valStart: last + m.valStart, valEnd: last + m.valEnd})
		}
		t.objEnd = last + m.valEnd
		return true
	})
	if roles == 0 || !assistant {
		// Two "role" members that disagree are not an assistant
		// message to every decoder: a new message is appended after it.
		t.prefix = nil
		return t, nil
	}
	switch {
	case roles > 1 || contents > 1:
		return t, errPrefillTwice
	case toolCalls:
		return t, errPrefillToolCalls
	case contents == 0 || el[content.valStart] != '"':
		return t, errPrefillContent
	}
	t.prefill = true
	t.contentEnd = last + content.valEnd - 1
	return t, nil
}

// emptyValue reports null, an empty array or an empty object.
func emptyValue(v []byte) bool {
	if string(v) == "null" {
		return true
	}
	if len(v) < 2 || (v[0] != '[' && v[0] != '{') {
		return false
	}
	return len(bytes.TrimLeft(v[1:len(v)-1], " \t\r\n")) == 0
}

// Why a request can never be continued (notContinuable's answers).
const (
	reasonNotObject   = "the request body is not a JSON object"
	reasonChoices     = `"n" asks for several choices: a continuation continues one`
	reasonLogprobs    = `"logprobs" or "top_logprobs" asks for the answer's token probabilities, which the delivered text has from another generation`
	reasonFormat      = `"response_format" constrains the answer's syntax, and constrained decoding restarts at the continuation's first token`
	reasonConstrained = "a grammar, regex, choice or schema constraint restarts at the continuation's first token"
	reasonToolChoice  = `"tool_choice" forces a tool call, and a tool call is never continued`
	reasonEcho        = `"echo" repeats the prompt, and so the delivered text, in the answer`
	reasonAudio       = "the answer is audio"
)

// notContinuable says why a request can never be continued, whatever the
// target ("" when it can): several choices (n > 1), logprobs, a JSON or
// structured-output response_format, no messages array. It reads the
// request body once, when the request arrives.
//
// The full list (docs/gateway.md#what-is-never-continued):
//
//   - n greater than 1;
//   - logprobs true, or top_logprobs greater than 0;
//   - response_format of any type but text (json_object, json_schema,
//     and the grammar types some servers add), and the server-side
//     constraints guided_json, guided_regex, guided_choice,
//     guided_grammar, structured_outputs, grammar and json_schema;
//   - tool_choice that forces a call: "required", or an object naming a
//     tool (only the objects of type auto and none do not);
//   - echo true (the answer would repeat the delivered text);
//   - audio output (modalities with "audio", or an audio member);
//   - a body that is not a JSON object, has no messages array or several,
//     or ends with an assistant message continuationBody refuses to join
//     (content not a string, tool_calls).
//
// It does not look at stream: the caller continues streams only. stop
// sequences and max_tokens do not prevent a continuation (the caller
// sends them unchanged; see the docs for what that means). It is safe for
// concurrent use.
func notContinuable(body []byte) string {
	if !json.Valid(body) {
		return reasonNotObject
	}
	var (
		reason string
		msgs   member
		nmsgs  int
	)
	if !scanTop(body, func(m member) bool {
		k, v := body[m.keyStart:m.keyEnd], body[m.valStart:m.valEnd]
		switch {
		case keyIs(k, "messages"):
			msgs, nmsgs = m, nmsgs+1
		case keyIs(k, "n"):
			if numberAbove(v, 1) {
				reason = reasonChoices
			}
		case keyIs(k, "logprobs"):
			if string(v) == "true" {
				reason = reasonLogprobs
			}
		case keyIs(k, "top_logprobs"):
			if numberAbove(v, 0) {
				reason = reasonLogprobs
			}
		case keyIs(k, "response_format"):
			if constrainedFormat(v) {
				reason = reasonFormat
			}
		case keyIs(k, "guided_json"), keyIs(k, "guided_regex"), keyIs(k, "guided_choice"), keyIs(k, "guided_grammar"),
			keyIs(k, "structured_outputs"), keyIs(k, "grammar"), keyIs(k, "json_schema"):
			if !emptyValue(v) && string(v) != `""` {
				reason = reasonConstrained
			}
		case keyIs(k, "tool_choice"):
			if forcesTool(v) {
				reason = reasonToolChoice
			}
		case keyIs(k, "echo"):
			if string(v) == "true" {
				reason = reasonEcho
			}
		case keyIs(k, "modalities"):
			if hasString(v, "audio") {
				reason = reasonAudio
			}
		case keyIs(k, "audio"):
			if string(v) != "null" {
				reason = reasonAudio
			}
		}
		return reason == ""
	}) {
		return reasonNotObject
	}
	if reason != "" {
		return reason
	}
	if _, err := messagesTail(body, msgs, nmsgs); err != nil {
		return err.Error()
	}
	return ""
}

// numberAbove reports a JSON number greater than x.
func numberAbove(v []byte, x float64) bool {
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return false
	}
	f, err := strconv.ParseFloat(string(v), 64)
	return err == nil && f > x
}

// constrainedFormat reports a response_format whose type is not text.
func constrainedFormat(v []byte) bool {
	if len(v) == 0 || v[0] != '{' {
		return false
	}
	constrained := false
	scanTop(v, func(m member) bool {
		if keyIs(v[m.keyStart:m.keyEnd], "type") {
			tv := v[m.valStart:m.valEnd]
			constrained = !(tv[0] == '"' && keyIs(tv, "text"))
		}
		return !constrained
	})
	return constrained
}

// forcesTool reports a tool_choice that forces a tool call: "required",
// or an object other than {"type":"auto"} and {"type":"none"}.
func forcesTool(v []byte) bool {
	switch {
	case len(v) == 0:
		return false
	case v[0] == '"':
		return keyIs(v, "required") || keyIs(v, "any")
	case v[0] != '{':
		return false
	}
	forced := true
	scanTop(v, func(m member) bool {
		if keyIs(v[m.keyStart:m.keyEnd], "type") {
			tv := v[m.valStart:m.valEnd]
			forced = !(tv[0] == '"' && (keyIs(tv, "auto") || keyIs(tv, "none")))
		}
		return true
	})
	return forced
}

// hasString reports an array with the string s among its elements.
func hasString(v []byte, s string) bool {
	if len(v) == 0 || v[0] != '[' {
		return false
	}
	sc := scanner{b: v, i: 1}
	for {
		sc.ws()
		start := sc.i
		if !sc.value() {
			return false
		}
		if el := v[start:sc.i]; el[0] == '"' && keyIs(el, s) {
			return true
		}
		sc.ws()
		if !sc.eat(',') {
			return false
		}
	}
}

// rejectsContinuation reports whether an upstream's answer (status and
// body) says it does not accept a continuation (a trailing assistant
// message), as opposed to an ordinary failure.
//
// Only a 400 or a 422 can say so, and only in words: the providers' own
// messages (Anthropic's "does not support assistant message prefill" and
// its rules on a final assistant message, Mistral's "expected last role
// user or tool", DeepSeek's "assistant message with prefix mode on",
// vLLM's "when the last message is from the assistant", llama.cpp's
// "assistant response prefill is incompatible"), wherever they appear in
// the body (a router such as OpenRouter nests the provider's body in its
// own), or an error message that rejects a member the dialects send
// ("prefix", "continue_final_message", "add_generation_prompt") as
// unknown or unsupported. Any other 400 (context length, a bad parameter)
// is an ordinary failure. It is safe for concurrent use.
func rejectsContinuation(status int, body []byte) bool {
	if status != 400 && status != 422 {
		return false
	}
	if len(body) > maxClassifyBytes {
		body = body[:maxClassifyBytes]
	}
	whole := strings.ReplaceAll(strings.ToLower(string(body)), "`", "")
	if containsAny(whole, continuationRejections) {
		return true
	}
	p, isJSON := parseError(body)
	msg := strings.ReplaceAll(p.message, "`", "")
	if msg == "" && isJSON {
		// A validation error without a message field, such as
		// {"detail":[{"type":"extra_forbidden","loc":["body","messages",1,"prefix"]}]}.
		msg = whole
	}
	return containsAny(msg, dialectMembers) && containsAny(msg, unknownMemberPhrases)
}

// The providers' words for "this target does not take a trailing
// assistant message", lower case, backticks removed.
var continuationRejections = []string{
	"does not support assistant message prefill",             // Anthropic, Claude 4.6 and later
	"conversation must end with a user message",              // the same message's second sentence
	"final assistant content cannot end with trailing white", // Anthropic: a prefill may not end with white space
	"final assistant message must start with a thinking block",
	"expected last role user or tool",             // Mistral without "prefix": true
	"assistant message with prefix mode on",       // DeepSeek outside its beta endpoint
	"when the last message is from the assistant", // vLLM without continue_final_message
	"continue_final_message and add_generation_prompt are not compatible",
	"assistant response prefill is incompatible", // llama.cpp server with thinking on
}

// A message that names a member the dialects send and says it is not
// accepted rejects the dialect.
var (
	dialectMembers       = []string{"prefix", "continue_final_message", "add_generation_prompt"}
	unknownMemberPhrases = []string{"unrecognized", "unsupported", "not supported", "not allowed", "unexpected", "not permitted", "extra_forbidden", "unknown"}
)
