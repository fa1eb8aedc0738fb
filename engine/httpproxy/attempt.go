package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/policy"
)

// request is one client request on its way through the engine. It is
// owned by the goroutine serving the request: Do calls call on it.
type request struct {
	h    *Handler
	r    *http.Request
	id   string
	body []byte // the client's body, as it came
	sent string // the model the client's body names
	sum  string // SHA-256 of body, hex; see bodySum
	hdr  http.Header
	alt  []altBody
	cur  *attempt // the last attempt; the delivered one after Do succeeds
}

// altBody is the client's body with another model value, made once per
// model a request needs.
type altBody struct {
	model string
	body  []byte
}

// attempt is one upstream attempt and, once it has a response, what the
// handler holds of it until it is delivered or released.
type attempt struct {
	t      *target
	index  int
	ctx    context.Context
	cancel context.CancelCauseFunc
	wd     watchdog
	start  time.Time
	resp   *http.Response

	held     []byte // the buffered body, or a stream's events up to the first
	rest     bool   // a body too large to buffer: resp.Body holds the rest
	stream   bool
	sse      *sseReader
	done     bool // the stream's first event was [DONE]
	errEvent bool // the stream's first event was an error
	released bool
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8<<10) }}

var errReleased = errors.New("reroute/httpproxy: attempt released")

// release ends the attempt: stops its timers, cancels its context and
// closes its response. It is idempotent.
func (at *attempt) release() {
	if at.released {
		return
	}
	at.released = true
	at.wd.stop()
	at.cancel(errReleased)
	if at.resp != nil {
		at.resp.Body.Close()
	}
	if at.sse != nil {
		at.sse.br.Reset(nil)
		readerPool.Put(at.sse.br)
		at.sse = nil
	}
}

// release frees the last attempt. ServeHTTP defers it: it closes a failed
// attempt's response when Do returns an error, and the delivered one after
// relaying it.
func (rq *request) release() {
	if rq.cur != nil {
		rq.cur.release()
	}
}

// header builds the header template every attempt starts from: the
// client's headers without credentials, hop-by-hop headers and those the
// handler sets itself.
func (rq *request) header() {
	in := rq.r.Header
	conn := in["Connection"]
	h := make(http.Header, len(in)+3)
	for k, v := range in {
		if dropRequestHeader(k) || listedIn(conn, k) {
			continue
		}
		h[k] = v
	}
	h["X-Request-Id"] = []string{rq.id}
	rq.hdr = h
}

// dropRequestHeader lists the client headers never forwarded: credentials
// (they would reach targets they were not meant for: SPEC §13),
// hop-by-hop headers, and headers the transport sets for the body it
// sends. Accept-Encoding is dropped because the handler reads bodies (to
// classify errors and to follow a stream): the transport negotiates gzip
// itself and decompresses.
func dropRequestHeader(k string) bool {
	switch k {
	case "Authorization", "X-Api-Key", "Api-Key", "X-Goog-Api-Key", "Anthropic-Version", "Proxy-Authorization",
		"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Content-Length", "Accept-Encoding", "Expect", "Host", "X-Request-Id":
		return true
	}
	return false
}

// dropResponseHeader lists the upstream headers not relayed: hop-by-hop,
// and those the handler sets.
func dropResponseHeader(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Content-Length", "X-Request-Id", "X-Reroute-Attempts", "X-Reroute-Target":
		return true
	}
	return false
}

func listedIn(conn []string, k string) bool {
	for _, v := range conn {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" && http.CanonicalHeaderKey(f) == k {
				return true
			}
		}
	}
	return false
}

// bodyFor returns the body to send to a target whose model name is model:
// the client's bytes when they already name it, otherwise the client's
// bytes with only the model value replaced (SPEC §13).
func (rq *request) bodyFor(model string) []byte {
	if model == rq.sent {
		return rq.body
	}
	for _, a := range rq.alt {
		if a.model == model {
			return a.body
		}
	}
	b, ok := ReplaceModel(rq.body, model)
	if !ok {
		// Cannot happen for a body ServeHTTP accepted (a JSON object
		// with a string model); kept as the documented fallback.
		var err error
		if b, err = RewriteModel(rq.body, model); err != nil {
			b = rq.body
		}
	}
	rq.alt = append(rq.alt, altBody{model, b})
	return b
}

// call is the engine.Call of the request: one upstream attempt. It returns
// once the attempt's fate can be decided: for a response that is not a
// stream, when its body has been read (bounded); for a 2xx stream, at its
// first event, which is the commit point if the engine delivers it.
func (rq *request) call(actx context.Context, a engine.Attempt) policy.Outcome {
	rq.release() // the previous attempt failed: its response is no longer needed
	t := &rq.h.targets[a.Index]
	at := &attempt{t: t, index: a.Index, start: time.Now()}
	rq.cur = at
	// The attempt's context descends from the client's, not from actx:
	// the engine cancels actx when call returns, and a stream must outlive
	// that. actx's own end (the engine's attempt timeout) is mirrored
	// while the call runs; after commit the watchdog keeps the attempt's
	// deadline.
	ctx, cancel := context.WithCancelCause(rq.r.Context())
	at.ctx, at.cancel, at.wd.cancel = ctx, cancel, cancel
	stop := context.AfterFunc(actx, func() {
		if rq.r.Context().Err() == nil {
			cancel(&TimeoutError{Phase: PhaseAttempt, Limit: t.limits.attempt})
		}
	})
	defer stop()

	hdr := maps.Clone(rq.hdr)
	switch {
	case t.passthrough:
		if v := rq.r.Header["Authorization"]; len(v) > 0 {
			hdr["Authorization"] = v
		}
		if v := rq.r.Header["X-Api-Key"]; t.anthropic && len(v) > 0 {
			hdr["X-Api-Key"] = v
		}
	case t.anthropic:
		hdr["X-Api-Key"] = t.auth
	default:
		hdr["Authorization"] = t.auth
	}
	if t.anthropic {
		hdr["Anthropic-Version"] = anthropicVersion
	}

	rctx := ctx
	if t.limits.connect > 0 || t.limits.headers > 0 {
		at.wd.arm(PhaseConnect, t.limits.connect)
		rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{GotConn: at.gotConn})
	}
	if rq.h.own && t.limits.connect > 0 {
		rctx = context.WithValue(rctx, connectKey{}, t.limits.connect)
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, t.url, bytes.NewReader(rq.bodyFor(t.model)))
	if err != nil {
		return rq.failed(at, err, 0)
	}
	req.GetBody = nil // never replayable: no retry behind the engine's back
	req.Header = hdr
	resp, err := rq.h.rt.RoundTrip(req)
	if err != nil {
		return rq.failed(at, err, 0)
	}
	ttfb := time.Since(at.start)
	at.resp = resp
	o := policy.Outcome{Status: resp.StatusCode, Header: resp.Header, TTFB: ttfb, Final: shouldNotRetry(resp.Header)}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 && isEventStream(resp.Header) {
		return rq.firstEvent(at, o)
	}
	at.wd.arm(PhaseIdle, t.limits.idle)
	body, more, err := at.readBody(rq.h.opts.maxResponse)
	if err != nil {
		return rq.failed(at, err, ttfb)
	}
	at.held, at.rest = body, more
	if !more {
		at.wd.stop()
		resp.Body.Close()
	}
	o.Total = time.Since(at.start)
	if o.Status >= 400 {
		rq.refine(&o, classifyBody(o.Status, body))
		rq.logFailure(at, &o, nil)
	}
	return o
}

var anthropicVersion = []string{"2023-06-01"}

func (at *attempt) gotConn(httptrace.GotConnInfo) { at.wd.arm(PhaseHeaders, at.t.limits.headers) }

// firstEvent reads a 2xx stream up to its first event. Comments and pings
// before it are held with it. An error event as the first event makes the
// attempt a failure with the status the same error has as a response, so
// that it is retried before anything reaches the client.
func (rq *request) firstEvent(at *attempt, o policy.Outcome) policy.Outcome {
	t := at.t
	at.stream = true
	at.wd.arm(PhaseFirstToken, t.limits.firstToken)
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(at.resp.Body)
	at.sse = &sseReader{br: br}
	for {
		kind, raw, data, err := at.sse.next()
		if err == io.EOF {
			err = errEmptyStream
		}
		if err != nil {
			return rq.failed(at, err, o.TTFB)
		}
		at.held = append(at.held, raw...)
		switch kind {
		case evNoise:
			continue
		case evDone:
			at.done = true
		case evError:
			p, _ := parseError(data)
			at.errEvent = true
			o.Status = eventStatus(p)
			rq.refine(&o, p.class())
			rq.logFailure(at, &o, nil)
		}
		break
	}
	if t.limits.attempt > 0 {
		at.wd.setHard(at.start.Add(t.limits.attempt), t.limits.attempt)
	}
	at.wd.arm(PhaseIdle, t.limits.idle)
	return o
}

// refine applies what the error body says (content policy, context length)
// to the outcome, per the handler's options.
func (rq *request) refine(o *policy.Outcome, c bodyClass) {
	var failover bool
	switch c {
	case bodyContentPolicy:
		failover = rq.h.opts.contentPolicyFailover
	case bodyContextLength:
		failover = rq.h.opts.contextLengthFailover
	default:
		return
	}
	if failover {
		o.NoSameTarget = true
	} else {
		o.Final = true
	}
}

// failed turns a transport error or a timeout into the attempt's outcome.
// The attempt's own timeouts are reported as the cause that fired.
func (rq *request) failed(at *attempt, err error, ttfb time.Duration) policy.Outcome {
	if cause := context.Cause(at.ctx); cause != nil {
		var te *TimeoutError
		if errors.As(cause, &te) {
			err = te
		}
	}
	at.release()
	o := policy.Outcome{Err: err, TTFB: ttfb, Total: time.Since(at.start)}
	rq.logFailure(at, &o, err)
	return o
}

func (rq *request) logFailure(at *attempt, o *policy.Outcome, err error) {
	if !rq.h.debug {
		return
	}
	rq.h.log.Debug("reroute upstream attempt failed",
		zap.String("request_id", rq.id),
		zap.String("target", at.t.id),
		zap.Int("status", o.Status),
		zap.Bool("final", o.Final),
		zap.Bool("no_same_target", o.NoSameTarget),
		zap.Duration("elapsed", time.Since(at.start)),
		zap.Error(err),
		zap.String("body_sha256", rq.bodySum()))
}

// readBody reads a response body that is not a stream, re-arming the idle
// timer before every read, up to limit bytes. more reports that the body
// is longer than limit (what was read is returned).
func (at *attempt) readBody(limit int64) (buf []byte, more bool, err error) {
	size := int64(512)
	if cl := at.resp.ContentLength; cl >= 0 {
		size = min(cl+1, limit+1)
	}
	buf = make([]byte, 0, size)
	for {
		if int64(len(buf)) >= limit {
			return buf, true, nil
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		end := min(int64(cap(buf)), limit)
		n, rerr := at.resp.Body.Read(buf[len(buf):end])
		buf = buf[:len(buf)+n]
		switch {
		case rerr == io.EOF:
			return buf, false, nil
		case rerr != nil:
			return nil, false, rerr
		}
		if n > 0 {
			at.wd.arm(PhaseIdle, at.t.limits.idle)
		}
	}
}

func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	if ct == "" {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "text/event-stream"
}

// deliver relays the answer the engine delivered. It writes nothing
// before the attempt has produced its first byte: for a stream, Do
// returned at the first event; otherwise the body is already read.
func (rq *request) deliver(w http.ResponseWriter, res engine.Result) {
	at := rq.cur
	h := w.Header()
	if err := res.Outcome.Err; err != nil || at == nil || at.resp == nil {
		// An attempt without a response delivered as it is: the target
		// has no retry_policy, so its timeout or transport error is the
		// answer.
		h.Set("X-Reroute-Attempts", strconv.Itoa(res.Attempts))
		h.Set("X-Reroute-Target", res.Target)
		var te *TimeoutError
		switch {
		case errors.As(err, &te):
			writeError(w, http.StatusGatewayTimeout, rq.id, "server_error", "The upstream did not answer in time ("+string(te.Phase)+" timeout, "+te.Limit.String()+").", "", te.code())
		case errors.Is(err, context.DeadlineExceeded):
			writeError(w, http.StatusGatewayTimeout, rq.id, "server_error", "The upstream did not answer in time.", "", "upstream_timeout")
		default:
			writeError(w, http.StatusBadGateway, rq.id, "server_error", "The upstream could not be reached or failed before answering.", "", "upstream_unreachable")
		}
		return
	}
	conn := at.resp.Header["Connection"]
	for k, v := range at.resp.Header {
		if !dropResponseHeader(k) && (conn == nil || !listedIn(conn, k)) {
			h[k] = v
		}
	}
	if up := at.resp.Header.Get("X-Request-Id"); up != "" && up != rq.id {
		h.Set("X-Reroute-Upstream-Request-Id", up)
	}
	h.Set("X-Request-Id", rq.id)
	h.Set("X-Reroute-Attempts", strconv.Itoa(res.Attempts))
	h.Set("X-Reroute-Target", res.Target)
	switch {
	case at.stream:
		rq.relay(w, res, at)
	case !at.rest:
		h.Set("Content-Length", strconv.Itoa(len(at.held)))
		w.WriteHeader(at.resp.StatusCode)
		_, _ = w.Write(at.held)
	default:
		rq.relayBody(w, res, at)
	}
}

// relayBody delivers a response that is not a stream and was too large to
// buffer: what was read, then the rest as it comes. A failure after commit
// aborts the client's response (http.ErrAbortHandler), so that a cut body
// is never taken for a whole one.
func (rq *request) relayBody(w http.ResponseWriter, res engine.Result, at *attempt) {
	if cl := at.resp.ContentLength; cl >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(cl, 10))
	}
	w.WriteHeader(at.resp.StatusCode)
	if _, err := w.Write(at.held); err != nil {
		return
	}
	buf := at.held[:cap(at.held)]
	if len(buf) > 32<<10 {
		buf = buf[:32<<10]
	}
	for {
		n, rerr := at.resp.Body.Read(buf)
		if n > 0 {
			at.wd.arm(PhaseIdle, at.t.limits.idle)
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
		}
		if rerr == io.EOF {
			res.End(time.Since(at.start), nil)
			return
		}
		if rerr != nil {
			if rq.r.Context().Err() != nil {
				return
			}
			err := rq.streamErr(at, rerr, ErrBodyCut)
			res.End(time.Since(at.start), err)
			rq.logCommitFailure(at, err)
			at.release()
			panic(http.ErrAbortHandler)
		}
	}
}

// relay delivers a stream: the events held up to the first one, then each
// event as it arrives, flushed when no more input is buffered. It ends at
// [DONE]. A failure after commit (a cut, a stall past the idle timeout, a
// malformed event, an end without [DONE]) is reported to the engine with
// Result.End and to the client as an in-band error event, after which the
// stream is closed without [DONE]. An error event of the upstream's own is
// relayed as it was sent and ends the stream the same way.
func (rq *request) relay(w http.ResponseWriter, res engine.Result, at *attempt) {
	rc := http.NewResponseController(w)
	w.WriteHeader(at.resp.StatusCode)
	if _, err := w.Write(at.held); err != nil {
		return
	}
	_ = rc.Flush()
	switch {
	case at.done:
		res.End(time.Since(at.start), nil)
		return
	case at.errEvent:
		res.End(time.Since(at.start), ErrStreamError)
		rq.logCommitFailure(at, ErrStreamError)
		return
	}
	for {
		kind, raw, _, err := at.sse.next()
		if err != nil {
			if rq.r.Context().Err() != nil {
				return // the client has gone; the upstream is not to blame
			}
			err = rq.streamErr(at, err, ErrStreamCut)
			res.End(time.Since(at.start), err)
			rq.logCommitFailure(at, err)
			_, _ = w.Write(streamErrorEvent(err, rq.id))
			_ = rc.Flush()
			return
		}
		if kind != evNoise {
			at.wd.arm(PhaseIdle, at.t.limits.idle)
		}
		if _, err := w.Write(raw); err != nil {
			return
		}
		if at.sse.br.Buffered() == 0 || kind == evDone || kind == evError {
			if err := rc.Flush(); err != nil {
				return
			}
		}
		switch kind {
		case evDone:
			res.End(time.Since(at.start), nil)
			return
		case evError:
			res.End(time.Since(at.start), ErrStreamError)
			rq.logCommitFailure(at, ErrStreamError)
			return
		}
	}
}

// streamErr names a read failure after commit: the watchdog's timeout if
// it fired, a malformed stream, an end without [DONE], or cut.
func (rq *request) streamErr(at *attempt, err, cut error) error {
	if cause := context.Cause(at.ctx); cause != nil {
		var te *TimeoutError
		if errors.As(cause, &te) {
			return te
		}
	}
	switch {
	case isMalformed(err):
		return errors.Join(ErrStreamMalformed, err)
	case err == io.EOF && cut == ErrStreamCut:
		return ErrStreamIncomplete
	}
	return errors.Join(cut, err)
}

func (rq *request) logCommitFailure(at *attempt, err error) {
	if ce := rq.h.log.Check(zap.WarnLevel, "reroute upstream failed after commit"); ce != nil {
		ce.Write(zap.String("request_id", rq.id), zap.String("target", at.t.id),
			zap.Duration("elapsed", time.Since(at.start)), zap.Error(err), zap.String("body_sha256", rq.bodySum()))
	}
}
