package httpproxy

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
)

// Path is the one path the handler serves.
const Path = "/v1/chat/completions"

// Handler is an http.Handler that serves POST /v1/chat/completions through
// an engine: every upstream attempt is one the engine decided. Create it
// with New. It is safe for concurrent use.
//
// The handler does not own the engine: close the engine after the HTTP
// server has shut down (requests still in flight then fail with
// engine.ErrClosed, rendered as 503). Call CloseIdleConnections when done
// to release the upstream keep-alive connections.
type Handler struct {
	e       *engine.Engine
	log     *zap.Logger
	debug   bool
	rt      http.RoundTripper
	own     bool     // rt is the handler's own *http.Transport
	targets []target // indexed like the engine's Compiled() targets
	opts    options

	bodyMem atomic.Int64 // bytes of client body buffers held, ≤ opts.maxBodyMemory
	reading atomic.Int64 // client bodies being read

	// Continuation (continuation.go), per target: its dialect, whether a
	// request with it as primary may be continued, and until when (unix
	// ns) it is not asked for a continuation after rejecting one.
	dialect     []policy.Continuation
	contPrimary []bool
	noCont      []atomic.Int64

	// ending is done once EndStreams has been called; streams relayed
	// then end with the in-band gateway_shutting_down event.
	ending context.Context
	endAll context.CancelFunc
}

// target is what the handler needs to reach one configured target.
type target struct {
	id          string
	model       string // the model name sent upstream
	url         string
	anthropic   bool
	passthrough bool
	auth        []string      // the credential header's value, shared read-only
	limits      policy.Limits // the engine's Compiled().Limits of the target
}

// New builds a handler on e. Every model provider must have a base_url, an
// absolute http or https URL; the upstream URL of a target is its base_url
// with "/chat/completions" appended to the path (base_url
// https://api.openai.com/v1 gives https://api.openai.com/v1/chat/completions;
// a query in base_url is kept). The engine's configuration must not change
// afterwards.
func New(e *engine.Engine, opts ...Option) (*Handler, error) {
	if e == nil {
		return nil, errors.New("reroute/httpproxy: nil engine")
	}
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	o.maxBodyMemory = max(o.maxBodyMemory, o.maxBody)
	h := &Handler{
		e:     e,
		log:   o.logger,
		debug: o.logger.Core().Enabled(zapcore.DebugLevel),
		rt:    o.transport,
		opts:  o,
	}
	if h.rt == nil {
		h.rt, h.own = newTransport(), true
	}
	h.ending, h.endAll = context.WithCancel(context.Background())
	cfg, c := e.Config(), e.Compiled()
	h.dialect, h.contPrimary, h.noCont = continuable(c)
	var probs []string
	for i := range cfg.ModelProviders {
		mp := &cfg.ModelProviders[i]
		t := target{
			id:          mp.Model,
			model:       c.Models[i],
			anthropic:   mp.ProviderInterface == "anthropic",
			passthrough: mp.PassthroughAuth,
			limits:      c.Limits[i],
		}
		if t.model == "" {
			t.model = mp.Model
		}
		u, err := upstreamURL(mp.BaseURL)
		if err != nil {
			probs = append(probs, fmt.Sprintf("model_providers[%d].base_url (model %s): %v", i, mp.Model, err))
		}
		t.url = u
		switch {
		case t.anthropic:
			t.auth = []string{mp.AccessKey}
		default:
			t.auth = []string{"Bearer " + mp.AccessKey}
		}
		h.targets = append(h.targets, t)
	}
	if len(probs) > 0 {
		return nil, fmt.Errorf("reroute/httpproxy: %s", strings.Join(probs, "; "))
	}
	return h, nil
}

func upstreamURL(base string) (string, error) {
	if base == "" {
		return "", errors.New("required by the HTTP handler")
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is not an absolute http or https URL", base)
	}
	return u.JoinPath("chat/completions").String(), nil
}

// CloseIdleConnections closes the idle upstream connections of the
// handler's transport (if it has that method). Connections in use are not
// affected. Call it when the handler is retired, after the server has shut
// down.
func (h *Handler) CloseIdleConnections() {
	if ci, ok := h.rt.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// EndStreams ends every stream the handler is relaying, and every one that
// commits afterwards, with the in-band SSE error event of code
// gateway_shutting_down, after the events already relayed and without
// [DONE]; the upstream request is cancelled and the target is not blamed.
// A host calls it when its shutdown grace period is over, then gives the
// handlers a moment to write the event before it closes the connections
// (cmd/gateway gives them up to a second). Requests that have not
// committed are not affected. It is idempotent and safe for concurrent
// use.
func (h *Handler) EndStreams() { h.endAll() }

// ServeHTTP serves one chat completion request: it validates the body,
// resolves the client's model to the primary target, runs the request
// through the engine and relays the delivered answer, or renders the
// engine's error.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := requestID(r.Header)
	if r.URL.Path != Path {
		writeError(w, http.StatusNotFound, id, "invalid_request_error", "Unknown path "+echo(r.URL.Path)+": this gateway serves POST "+Path+".", "", "not_found")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, id, "invalid_request_error", "Method "+echo(r.Method)+" is not allowed: use POST.", "", "method_not_allowed")
		return
	}
	body, held, ref := h.readBody(w, r)
	defer h.bodyMem.Add(-held)
	if ref != nil {
		if ref.close {
			// The rest of the body is not read: the server must not
			// wait to drain it before the next request.
			w.Header().Set("Connection", "close")
		}
		if ref.retryAfter {
			w.Header().Set("Retry-After", "1")
			writeError(w, ref.status, id, "server_error", ref.msg, "", ref.code)
			return
		}
		invalidRequest(w, ref.status, id, ref.msg, "", ref.code)
		return
	}
	if !json.Valid(body) {
		invalidRequest(w, http.StatusBadRequest, id, "We could not parse the JSON body of your request: it is not valid JSON.", "", "invalid_json")
		return
	}
	model, err := requestModel(body)
	switch {
	case errors.Is(err, errNotObject):
		invalidRequest(w, http.StatusBadRequest, id, "The request body must be a JSON object.", "", "invalid_json")
		return
	case errors.Is(err, errNoModel):
		invalidRequest(w, http.StatusBadRequest, id, "You must provide a model parameter.", "model", "missing_model")
		return
	case err != nil:
		invalidRequest(w, http.StatusBadRequest, id, "Invalid model parameter: "+err.Error()+".", "model", "invalid_model")
		return
	case len(model) > MaxModelBytes:
		invalidRequest(w, http.StatusBadRequest, id, "The model parameter is "+strconv.Itoa(len(model))+" bytes long; this gateway accepts model names of at most "+strconv.Itoa(MaxModelBytes)+" bytes.", "model", "model_too_long")
		return
	}
	t, ambiguous := h.e.Compiled().Resolve(model)
	if t < 0 {
		if len(ambiguous) > 0 {
			invalidRequest(w, http.StatusBadRequest, id, "The model "+echo(model)+" is ambiguous: it is configured as "+strings.Join(ambiguous, ", ")+". Name one of those target ids.", "model", "ambiguous_model")
			return
		}
		invalidRequest(w, http.StatusNotFound, id, "The model "+echo(model)+" does not exist or is not configured on this gateway.", "model", "model_not_found")
		return
	}
	start := time.Now()
	rq := &request{h: h, r: r, id: id, body: body, sent: model}
	if h.contPrimary[t] {
		if why := notContinuable(body); why == "" {
			rq.cont = &continuation{}
		} else if h.debug {
			h.log.Debug("reroute request cannot be continued", zap.String("request_id", id), zap.String("why", why))
		}
	}
	rq.header()
	defer rq.release()
	ctx := engine.WithRequestID(r.Context(), rq.id)
	var end func(engine.Result, error)
	if f := h.opts.requestTracer; f != nil {
		ctx, end = f(ctx, h.e.Compiled().Targets[t])
	}
	call := rq.call
	if f := h.opts.callWrapper; f != nil {
		call = f(call)
	}
	rq.ctx, rq.do = ctx, call
	res, err := h.e.DoTarget(ctx, t, call)
	if f := h.opts.overhead; f != nil {
		// From the body read to the answer's first byte, less the
		// upstream calls and the engine's waits: the time this gateway
		// itself added.
		f(h.e.Compiled().Targets[t], max(time.Since(start)-rq.outside, 0))
	}
	if err != nil {
		rq.renderError(w, err)
	} else {
		rq.pick(res.Number)
		res = rq.deliver(w, res) // a continued stream ends with its continuation's
	}
	if end != nil {
		end(res, err)
	}
}

// MaxModelBytes bounds the model name of a request: a longer one is
// refused with 400 (code model_too_long) before any lookup. Model names
// and target ids are tens of bytes.
const MaxModelBytes = 1 << 10

// maxEcho bounds how much of a client's value (a model name, a path, a
// method) an error message repeats.
const maxEcho = 256

// echo quotes s for an error message, cut to its first maxEcho bytes (at a
// character boundary) with an ellipsis and its length when it is longer:
// an answer never grows with what the client sent.
func echo(s string) string {
	if len(s) <= maxEcho {
		return strconv.Quote(s)
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// refusal is a request refused while its body was read.
type refusal struct {
	status     int
	code, msg  string
	close      bool // the body was not read to its end: close the connection
	retryAfter bool // a server-side limit: 503 with Retry-After
}

// readBody reads the client's body within the size limit, the read
// deadline and the memory budget of all bodies. held is what it took from
// the budget: the caller gives it back when the request ends, since the
// body is held until then.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) (body []byte, held int64, ref *refusal) {
	max := h.opts.maxBody
	if r.ContentLength > max {
		return nil, 0, tooLarge(max, true)
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, 0, nil
	}
	h.reading.Add(1)
	defer h.reading.Add(-1)
	rc := http.NewResponseController(w)
	if d := h.opts.bodyTimeout; d > 0 {
		_ = rc.SetReadDeadline(time.Now().Add(d))
	}
	defer func() {
		if ref != nil && ref.close {
			// net/http would drain what is left of a body after the
			// answer: a deadline already passed makes it close the
			// connection at once instead.
			_ = rc.SetReadDeadline(time.Now())
			return
		}
		// Cleared once the body is read: net/http reads the connection
		// in the background while the request runs (to see the client
		// leave), and a deadline passing then would cancel the request.
		if h.opts.bodyTimeout > 0 {
			_ = rc.SetReadDeadline(time.Time{})
		}
	}()
	limit := h.opts.maxBodyMemory
	reserve := func(n int64) bool {
		if h.bodyMem.Add(n) > limit {
			h.bodyMem.Add(-n)
			return false
		}
		held += n
		return true
	}
	// MaxBytesReader, besides bounding the read, tells the server to close
	// the connection instead of draining an oversized body after the
	// answer.
	buf, more, err := readUpTo(http.MaxBytesReader(w, r.Body, max), r.ContentLength, max, nil, reserve)
	var mbe *http.MaxBytesError
	switch {
	case more || errors.As(err, &mbe):
		return nil, held, tooLarge(max, false)
	case errors.Is(err, errNoMemory):
		return nil, held, &refusal{status: http.StatusServiceUnavailable, code: "gateway_busy", close: true, retryAfter: true,
			msg: "The gateway is holding as many request bodies as its memory limit of " + strconv.FormatInt(limit, 10) + " bytes allows; retry the request."}
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, held, &refusal{status: http.StatusRequestTimeout, code: "request_timeout", close: true,
			msg: "The request body was not received within this gateway's limit of " + h.opts.bodyTimeout.String() + "."}
	case err != nil:
		return nil, held, &refusal{status: http.StatusBadRequest, code: "", close: true, msg: "The request body could not be read."}
	}
	return buf, held, nil
}

// tooLarge is the refusal of a body larger than max. It is built only for
// a body refused: a request that is served does not pay for its message.
func tooLarge(max int64, close bool) *refusal {
	return &refusal{status: http.StatusRequestEntityTooLarge, code: "request_too_large", close: close,
		msg: "The request body is larger than this gateway's limit of " + strconv.FormatInt(max, 10) + " bytes."}
}

// requestID returns the client's x-request-id, or a new random one. An
// over-long client value is replaced: it ends up in logs and headers.
func requestID(h http.Header) string {
	if v := h.Get("X-Request-Id"); v != "" && len(v) <= 200 {
		return v
	}
	var b [16]byte
	for i := 0; i < len(b); i += 8 {
		v := rand.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return hex.EncodeToString(b[:])
}
