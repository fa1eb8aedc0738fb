package httpproxy

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"

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
	cfg, c := e.Config(), e.Compiled()
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

// ServeHTTP serves one chat completion request: it validates the body,
// resolves the client's model to the primary target, runs the request
// through the engine and relays the delivered answer, or renders the
// engine's error.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := requestID(r.Header)
	if r.URL.Path != Path {
		writeError(w, http.StatusNotFound, id, "invalid_request_error", "Unknown path "+strconv.Quote(r.URL.Path)+": this gateway serves POST "+Path+".", "", "not_found")
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, id, "invalid_request_error", "Method "+r.Method+" is not allowed: use POST.", "", "method_not_allowed")
		return
	}
	body, status, msg := h.readBody(w, r)
	if status != 0 {
		code := ""
		if status == http.StatusRequestEntityTooLarge {
			code = "request_too_large"
		}
		invalidRequest(w, status, id, msg, "", code)
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
	}
	t, ambiguous := h.e.Compiled().Resolve(model)
	if t < 0 {
		if len(ambiguous) > 0 {
			invalidRequest(w, http.StatusBadRequest, id, "The model "+strconv.Quote(model)+" is ambiguous: it is configured as "+strings.Join(ambiguous, ", ")+". Name one of those target ids.", "model", "ambiguous_model")
			return
		}
		invalidRequest(w, http.StatusNotFound, id, "The model "+strconv.Quote(model)+" does not exist or is not configured on this gateway.", "model", "model_not_found")
		return
	}
	rq := &request{h: h, r: r, id: id, body: body, sent: model}
	rq.header()
	defer rq.release()
	res, err := h.e.DoTarget(engine.WithRequestID(r.Context(), rq.id), t, rq.call)
	if err != nil {
		rq.renderError(w, err)
		return
	}
	rq.deliver(w, res)
}

// readBody reads the client's body within the size limit. A non-zero
// status is the error to answer with.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int, string) {
	max := h.opts.maxBody
	tooLarge := "The request body is larger than this gateway's limit of " + strconv.FormatInt(max, 10) + " bytes."
	if r.ContentLength > max {
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	}
	if r.Body == nil {
		return nil, 0, ""
	}
	// MaxBytesReader, besides bounding the read, tells the server to close
	// the connection instead of draining an oversized body after the
	// answer.
	buf, more, err := readUpTo(http.MaxBytesReader(w, r.Body, max), r.ContentLength, max, nil)
	var mbe *http.MaxBytesError
	switch {
	case more || errors.As(err, &mbe):
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	case err != nil:
		return nil, http.StatusBadRequest, "The request body could not be read."
	}
	return buf, 0, ""
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
