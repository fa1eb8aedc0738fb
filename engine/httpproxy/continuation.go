package httpproxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
)

// This file continues a stream that failed after commit
// (docs/gateway.md#continuing-a-cut-stream): while the answer streams, the
// text of choice 0 is accumulated; when the stream fails, the engine runs
// the continuation (engine.Engine.Continue) with a request that carries
// that text as the start of the answer (continuation_body.go), and the
// continuation's events are relayed rewritten, so that the client reads
// one answer: one id, one role chunk, the text joined, one finish_reason,
// one [DONE].
//
// Only a request that may be continued pays for any of it: one whose
// primary's policy has continue_streams, with some target that has a
// continuation dialect, and whose body can be continued at all
// (notContinuable), checked once when it arrives. For every other request
// the relay tests one nil pointer per event.

// DefaultContinuationRejectionTTL is how long a target that rejected a
// continuation request (rejectsContinuation) is not asked for another, by
// any request: 10 minutes. A rejection says the deployment does not take a
// trailing assistant message, which a configuration change or a new model
// version fixes, not the next second.
const DefaultContinuationRejectionTTL = 10 * time.Minute

// MaxContinuationText bounds the text a continuable stream keeps for its
// continuation: 1 MiB, more than the longest answer of today's models.
// A longer answer is relayed as any other stream, and is no longer
// continued if it fails, so that each client costs bounded memory.
const MaxContinuationText = 1 << 20

// continuation is what a request that may be continued keeps of its
// stream. It is owned by the request's goroutine.
type continuation struct {
	text []byte // the text of choice 0 delivered so far
	// id, model and created are the values of the first chunk the client
	// got, raw JSON: every continued chunk carries them.
	id, model, created json.RawMessage
	// stop says why the stream can no longer be continued ("" while it
	// can): a tool call in flight, a finish_reason already sent, a chunk
	// of another choice or one that cannot be read.
	stop string
	// rejected: the targets that rejected a continuation in this request.
	rejected []int
	// bodies: the continuation body of each target the current
	// continuation has attempted, built on first use; reset for each
	// continuation, as the text grows.
	bodies map[int][]byte
	// dialects: whether the client's body can be continued in each
	// dialect asked about (canContinue); it does not depend on the text.
	dialects []dialectVerdict
	n        int // continuations run so far
}

// chunkView is what the continuation reads of a chunk, as json.Unmarshal
// decodes it: the contract of chunkReader, and its slow path.
type chunkView struct {
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

// present reports a JSON value that is there and not null.
func present(v json.RawMessage) bool { return len(v) > 0 && string(v) != "null" }

// observe reads one data chunk of the answer the client gets, with
// chunkReader (continuation_chunk.go): it allocates only to grow the text,
// and to keep the first chunk's id, model and created.
func (c *continuation) observe(data []byte) {
	if c.stop != "" {
		return
	}
	kept := len(c.text)
	r := chunkReader{scanner: scanner{b: data}, text: c.text}
	switch r.read() {
	case chunkBad:
		c.text, c.stop = r.text[:kept], stopUnreadable
		return
	case chunkSlow:
		c.text = r.text[:kept]
		c.observeSlow(data)
		return
	}
	if c.id == nil {
		c.id, c.model, c.created = r.keep()
	}
	c.text, c.stop = r.text, r.stop
	if r.long {
		c.text = nil
	}
}

// observeSlow is observe by json.Unmarshal, for the shapes chunkReader
// leaves to it.
func (c *continuation) observeSlow(data []byte) {
	var ch chunkView
	if err := json.Unmarshal(data, &ch); err != nil {
		c.stop = stopUnreadable
		return
	}
	if c.id == nil {
		c.id, c.model, c.created = ch.ID, ch.Model, ch.Created
	}
	for _, x := range ch.Choices {
		stop := choiceStop(x.Index != 0, present(x.Delta.ToolCalls) || present(x.Delta.FunctionCall),
			x.FinishReason != nil && *x.FinishReason != "")
		switch {
		case stop != "":
			c.stop = stop
		case x.Delta.Content != nil && len(c.text)+len(*x.Delta.Content) > MaxContinuationText:
			c.stop, c.text = stopTooLong, nil
		case x.Delta.Content != nil:
			c.text = append(c.text, *x.Delta.Content...)
			continue
		default:
			continue
		}
		return
	}
}

// observeEvents observes the data events of held, the raw events the
// client got before the first relayed by the loop.
func (c *continuation) observeEvents(held []byte) {
	r := sseReader{br: bufio.NewReader(bytes.NewReader(held))}
	for {
		kind, _, data, err := r.next()
		if err != nil {
			return
		}
		if kind == evData {
			c.observe(data)
		}
	}
}

// rewrite turns one data chunk of a continuation into the event the
// client gets, nil to skip it: the original's id, model and created, and
// no role (a chunk that carried only the role is dropped, the client has
// had one). The chunk's text is observed as part of the answer, so that a
// continuation can be continued in turn. A chunk that is not an object is
// relayed as it is.
func (c *continuation) rewrite(data []byte) []byte {
	c.observe(data)
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return frame(data)
	}
	for _, kv := range [...]struct {
		k string
		v json.RawMessage
	}{{"id", c.id}, {"model", c.model}, {"created", c.created}} {
		if _, ok := top[kv.k]; ok && kv.v != nil {
			top[kv.k] = kv.v
		}
	}
	roleOnly := false
	var choices []map[string]json.RawMessage
	if raw, ok := top["choices"]; ok && json.Unmarshal(raw, &choices) == nil && len(choices) > 0 {
		var delta map[string]json.RawMessage
		if d, ok := choices[0]["delta"]; ok && json.Unmarshal(d, &delta) == nil {
			if _, had := delta["role"]; had {
				delete(delta, "role")
				roleOnly = len(choices) == 1 && emptyValues(delta) && !present(choices[0]["finish_reason"])
				choices[0]["delta"] = marshal(delta)
				top["choices"] = marshal(choices)
			}
		}
	}
	if roleOnly && !present(top["usage"]) {
		return nil
	}
	return frame(marshal(top))
}

// emptyValues reports an object whose members are all null or "".
func emptyValues(m map[string]json.RawMessage) bool {
	for _, v := range m {
		if present(v) && string(v) != `""` {
			return false
		}
	}
	return true
}

// marshal encodes v without escaping HTML characters, so that the text
// reads as the upstream wrote it. Maps of raw values cannot fail.
func marshal(v any) json.RawMessage {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return bytes.TrimRight(b.Bytes(), "\n")
}

// frame makes an SSE data event of a JSON payload.
func frame(data []byte) []byte {
	out := make([]byte, 0, len(data)+8)
	out = append(out, "data: "...)
	out = append(out, data...)
	return append(out, "\n\n"...)
}

// continueStream runs the continuation of the stream whose answer res
// failed after commit with cause (already reported with res.End), and
// when a target continues it, writes the SSE comment that names it and
// the continuation's first events, and returns its result and attempt
// for the relay to go on with. ok is false when the stream cannot be
// continued, or no target could: the caller then ends it with the error
// event of cause.
func (rq *request) continueStream(w http.ResponseWriter, rc *http.ResponseController, res engine.Result, cause error) (engine.Result, *attempt, bool) {
	c := rq.cont
	if c.stop != "" || rq.r.Context().Err() != nil || rq.h.ending.Err() != nil {
		if c.stop != "" && rq.h.debug {
			rq.h.log.Debug("reroute stream not continued", zap.String("request_id", rq.id), zap.String("target", res.Target), zap.String("why", c.stop))
		}
		return res, nil, false
	}
	if isConnectionLost(cause) {
		cause = errors.Join(engine.ErrConnectionLost, cause)
	}
	c.bodies = map[int][]byte{}
	c.n++
	next, err := rq.h.e.Continue(rq.ctx, res, cause, rq.canContinue, rq.do)
	if err != nil {
		if ce := rq.h.log.Check(zap.InfoLevel, "reroute stream not continued"); ce != nil {
			ce.Write(zap.String("request_id", rq.id), zap.String("target", res.Target), zap.Error(err))
		}
		return res, nil, false
	}
	rq.pick(next.Number)
	at := rq.cur
	if ce := rq.h.log.Check(zap.InfoLevel, "reroute stream continued"); ce != nil {
		ce.Write(zap.String("request_id", rq.id), zap.String("from", res.Target), zap.String("target", next.Target),
			zap.Int("attempt", next.Attempts), zap.Int("delivered_bytes", len(c.text)))
	}
	comment := ": reroute continued target=" + oneLine.Replace(next.Target) + " attempt=" + strconv.Itoa(next.Attempts) + "\n\n"
	if _, err := io.WriteString(w, comment); err != nil {
		return next, at, true // the client has gone: the relay finds out
	}
	rq.writeContinued(w, at)
	_ = rc.Flush()
	return next, at, true
}

// oneLine keeps a target id on the line of the SSE comment that names it:
// the id is the configuration's, and a line break in one would end the
// comment early.
var oneLine = strings.NewReplacer("\n", " ", "\r", " ")

// writeContinued writes a continuation's held events (those up to its
// first), data rewritten, and drops them.
func (rq *request) writeContinued(w io.Writer, at *attempt) {
	r := sseReader{br: bufio.NewReader(bytes.NewReader(at.held))}
	for {
		kind, raw, data, err := r.next()
		if err != nil {
			break
		}
		if kind == evData {
			raw = rq.cont.rewrite(data)
		}
		if _, err := w.Write(raw); err != nil {
			break
		}
	}
	at.held = nil
}

// isConnectionLost says whether a failure after commit was the
// connection's (a cut, a stall, the attempt's deadline, an end before the
// finish_reason), after which the target that failed may continue its own
// answer first, rather than the answer's (malformed or oversized events).
func isConnectionLost(err error) bool {
	var te *TimeoutError
	return errors.Is(err, ErrStreamCut) || errors.Is(err, ErrStreamIncomplete) || errors.As(err, &te)
}

// canContinue is the engine's filter of the continuation's candidates:
// a target with a continuation dialect, that has not rejected one (in this
// request, or in any within the rejection TTL), and for which the
// continuation body can be built. It builds no body: the engine asks about
// every candidate of a random pick, and a body per candidate (the client's
// body and the text delivered, each) would make a continuation's memory
// grow with the configuration. Whether a body can be built depends only on
// the client's body and the dialect, so the answer is kept per dialect.
func (rq *request) canContinue(t int) bool {
	h := rq.h
	d := h.dialect[t]
	if d == policy.ContinueNone || h.noCont[t].Load() > time.Now().UnixNano() {
		return false
	}
	c := rq.cont
	for _, r := range c.rejected {
		if r == t {
			return false
		}
	}
	if len(c.text) == 0 {
		return true // the client's request as it was (contBody)
	}
	for _, v := range c.dialects {
		if v.d == d {
			return v.ok
		}
	}
	_, err := continuationBody(rq.body, d, "")
	if err != nil && h.debug {
		h.log.Debug("reroute continuation body cannot be built", zap.String("request_id", rq.id), zap.String("continuation", string(d)), zap.Error(err))
	}
	c.dialects = append(c.dialects, dialectVerdict{d, err == nil})
	return err == nil
}

// dialectVerdict says whether the client's body can be continued in a
// dialect.
type dialectVerdict struct {
	d  policy.Continuation
	ok bool
}

// contBody returns the continuation body of target t, which canContinue
// accepted, built when the engine makes an attempt to t. With no text
// delivered yet (a stream cut after its role chunk) it is the client's
// request as it was: there is nothing to continue, and an empty assistant
// message is refused by some providers.
func (rq *request) contBody(t int) ([]byte, error) {
	c := rq.cont
	if b, ok := c.bodies[t]; ok {
		return b, nil
	}
	tg := &rq.h.targets[t]
	b := rq.bodyFor(tg.model)
	if len(c.text) > 0 {
		var err error
		if b, err = continuationBody(b, rq.h.dialect[t], string(c.text)); err != nil {
			return nil, err
		}
	}
	c.bodies[t] = b
	return b, nil
}

// rejected records that target t rejected a continuation request: not
// asked again in this request, nor by any other for the rejection TTL,
// unless the delivered text ends with white space: some providers refuse
// a prefill that does (Anthropic), which says nothing of the next
// request's text.
func (rq *request) rejected(t int) {
	rq.cont.rejected = append(rq.cont.rejected, t)
	if txt := rq.cont.text; len(txt) > 0 && strings.ContainsRune(" \t\n\r", rune(txt[len(txt)-1])) {
		if rq.h.debug {
			rq.h.log.Debug("reroute target rejected a continuation of text that ends with white space", zap.String("request_id", rq.id), zap.String("target", rq.h.targets[t].id))
		}
		return
	}
	ttl := rq.h.opts.contRejectTTL
	until := time.Now().Add(ttl)
	rq.h.noCont[t].Store(until.UnixNano())
	if ce := rq.h.log.Check(zap.WarnLevel, "reroute target rejected a continuation"); ce != nil {
		ce.Write(zap.String("request_id", rq.id), zap.String("target", rq.h.targets[t].id), zap.Duration("not_asked_for", ttl))
	}
}

// ContinuationRejection is a target that rejected a continuation request
// and is not asked for another until Until.
type ContinuationRejection struct {
	Target string
	Until  time.Time
}

// ContinuationRejections lists the targets that rejected a continuation
// and are not asked for another now, in configuration order. Safe for
// concurrent use.
func (h *Handler) ContinuationRejections() []ContinuationRejection {
	var out []ContinuationRejection
	now := time.Now().UnixNano()
	for t := range h.noCont {
		if u := h.noCont[t].Load(); u > now {
			out = append(out, ContinuationRejection{Target: h.targets[t].id, Until: time.Unix(0, u)})
		}
	}
	return out
}

// continuable precomputes, per primary target, whether a request for it
// may be continued at all: its policy has continue_streams and some
// target has a dialect.
func continuable(c *policy.Compiled) (dialect []policy.Continuation, primary []bool, noCont []atomic.Int64) {
	dialect = append([]policy.Continuation(nil), c.Continuation...)
	some := false
	for _, d := range dialect {
		some = some || d != policy.ContinueNone
	}
	primary = make([]bool, len(dialect))
	for t := range primary {
		primary[t] = some && c.Rules[t] != nil && c.Rules[t].ContinueStreams
	}
	return dialect, primary, make([]atomic.Int64, len(dialect))
}
