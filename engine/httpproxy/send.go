package httpproxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// attempt is one upstream attempt and, once it has a response, what the
// handler holds of it until it is delivered or released.
type attempt struct {
	t      *target
	index  int
	number int // the engine's attempt number (engine.Attempt.Number)
	// returned says the call has returned; guarded by request.mu
	returned bool
	ctx      context.Context
	cancel   context.CancelCauseFunc
	wd       watchdog
	start    time.Time
	resp     *http.Response

	held      []byte // the buffered body, or a stream's events up to the first
	rest      bool   // a body too large to buffer: resp.Body holds the rest
	stream    bool
	sse       *sseReader
	done      bool       // the stream's first event was [DONE]
	errEvent  bool       // the stream's first event was an error
	ends      choiceEnds // a stream's choices and their finish_reasons so far
	malformed int        // malformed events skipped after commit
	released  bool
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
	at.held = nil // never kept past the attempt: it may be WithMaxResponseBytes long
	if at.sse != nil {
		at.sse.br.Reset(nil)
		readerPool.Put(at.sse.br)
		at.sse = nil
	}
}

// call is the engine.Call of the request: one upstream attempt. It returns
// once the attempt's fate can be decided: for a response that is not a
// stream, when its body has been read (bounded); for a 2xx stream, at its
// first event, which is the commit point if the engine delivers it.
// The outcome's TTFB is the time until the response headers; its Total,
// the time until the body was read, is set for every answer read whole and
// for a stream whose first event is an error: a failed attempt always
// says how long it took (the exhaustion's FailedAttempt.Latency).
func (rq *request) call(actx context.Context, a engine.Attempt) policy.Outcome {
	t := &rq.h.targets[a.Index]
	at := &attempt{t: t, index: a.Index, number: a.Number, start: time.Now()}
	rq.begin(at, a.Hedge) // the previous attempts failed: their responses are no longer needed
	defer rq.returned(at, a.Wait, rq.h.opts.overhead != nil)
	// The attempt's context descends from the client's, not from actx:
	// the engine cancels actx when call returns, and a stream must outlive
	// that. actx's own end (the engine's attempt timeout) is mirrored
	// while the call runs; after commit the watchdog keeps the attempt's
	// deadline.
	ctx, cancel := context.WithCancelCause(rq.r.Context())
	at.ctx, at.cancel, at.wd.cancel = ctx, cancel, cancel
	stop := context.AfterFunc(actx, func() {
		if rq.r.Context().Err() == nil {
			if c := context.Cause(actx); errors.Is(c, engine.ErrAbandoned) {
				cancel(c) // it lost to a hedge: its connection is cut
				return
			}
			cancel(&TimeoutError{Phase: PhaseAttempt, Limit: t.limits.Attempt})
		}
	})
	defer stop()

	hdr := maps.Clone(rq.hdr)
	if f := rq.h.opts.headerInjector; f != nil {
		// actx, not ctx: ctx descends from the client's context, and
		// only actx carries what the engine and a call wrapper put in
		// for this attempt (its span). Before the credentials, so that
		// an injector can never replace them.
		f(actx, hdr)
	}
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
	if t.limits.Connect > 0 || t.limits.Headers > 0 {
		at.wd.arm(PhaseConnect, t.limits.Connect)
		rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{GotConn: at.gotConn})
	}
	if rq.h.own && t.limits.Connect > 0 {
		rctx = context.WithValue(rctx, connectKey{}, t.limits.Connect)
	}
	var err error
	body := rq.bodyFor(t.model)
	if a.Continuation && rq.cont != nil {
		// The engine asks only targets that can have one (canContinue).
		if body, err = rq.contBody(a.Index); err != nil {
			o := rq.transportOutcome(at, fmt.Errorf("reroute/httpproxy: continuation body of %s: %w", t.id, err), 0)
			o.NoSameTarget = true
			return o
		}
	}
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return rq.transportOutcome(at, err, 0)
	}
	req.GetBody = nil // never replayable: no retry behind the engine's back
	req.Header = hdr
	resp, err := rq.h.rt.RoundTrip(req)
	if err != nil {
		return rq.transportOutcome(at, err, 0)
	}
	ttfb := time.Since(at.start)
	at.resp = resp
	// x-should-retry: false says "do not retry this provider" (an
	// exhausted quota), not "do not fail over": the request may still go
	// to another provider. Only a content-policy refusal is Final.
	o := policy.Outcome{Status: resp.StatusCode, Header: resp.Header, TTFB: ttfb, NoSameProvider: shouldNotRetry(resp.Header)}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 && isEventStream(resp.Header) {
		return rq.firstEvent(at, o)
	}
	if a.Continuation && resp.StatusCode < 300 {
		// An answer that is not a stream cannot continue one: the engine
		// ends the continuation on it (Final: not relayable).
		o.Final = true
	}
	at.wd.arm(PhaseIdle, t.limits.Idle)
	body, more, err := readUpTo(resp.Body, resp.ContentLength, rq.h.opts.maxResponse, at.idle, nil)
	if err != nil {
		return rq.transportOutcome(at, errors.Join(ErrBodyCut, err), ttfb)
	}
	if !more && closeDelimited(resp) && resp.StatusCode < 300 && jsonAnswer(resp.Header, body) && !json.Valid(body) {
		// A body that ends with the connection cannot be told from one
		// cut with it, except by its content: a JSON answer that does not
		// parse was cut. Never deliver it as a success.
		return rq.transportOutcome(at, fmt.Errorf("%w: the connection closed inside a JSON body", ErrBodyCut), ttfb)
	}
	at.held, at.rest = body, more
	if !more {
		at.wd.stop()
		resp.Body.Close()
	}
	o.Total = time.Since(at.start)
	if o.Status >= 400 {
		rq.refine(&o, classifyBody(o.Status, body))
		if a.Continuation && rq.cont != nil && rejectsContinuation(o.Status, body) {
			// Not a failure of the target: it does not take a
			// continuation, and is asked for none again for a while.
			o.NoSameTarget, o.Final = true, false
			rq.rejected(a.Index)
		}
		rq.logFailure(at, &o, nil)
	}
	return o
}

var anthropicVersion = []string{"2023-06-01"}

// closeDelimited reports a response whose body ends when the connection
// closes: neither a length nor chunked framing says where it ends.
func closeDelimited(resp *http.Response) bool {
	return resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 && !resp.Uncompressed
}

// jsonAnswer reports an answer that is JSON: one that says so in its
// Content-Type, or one without a Content-Type whose body starts like a
// JSON object or array (some servers send no type, and a chat completion
// answer is JSON).
func jsonAnswer(h http.Header, body []byte) bool {
	if isJSON(h) {
		return true
	}
	if h.Get("Content-Type") != "" {
		return false
	}
	b := bytes.TrimLeft(body, " \t\r\n")
	return len(b) > 0 && (b[0] == '{' || b[0] == '[')
}

// isJSON reports a JSON media type (application/json, or a +json suffix).
func isJSON(h http.Header) bool {
	mt := mediaType(h)
	return mt == "application/json" || strings.HasSuffix(mt, "+json")
}

// mediaType returns the media type of a response's Content-Type, "" when
// it has none or it does not parse.
func mediaType(h http.Header) string {
	ct := h.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ""
	}
	return mt
}

func (at *attempt) gotConn(httptrace.GotConnInfo) { at.wd.arm(PhaseHeaders, at.t.limits.Headers) }

// idle re-arms the idle timer: the upstream has just sent something.
func (at *attempt) idle() { at.wd.arm(PhaseIdle, at.t.limits.Idle) }

// firstEvent reads a 2xx stream up to its first event. Comments and pings
// before it are held with it. An error event as the first event makes the
// attempt a failure with the status the same error has as a response, so
// that it is retried before anything reaches the client.
func (rq *request) firstEvent(at *attempt, o policy.Outcome) policy.Outcome {
	t := at.t
	at.stream = true
	at.wd.arm(PhaseFirstToken, t.limits.FirstToken)
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(at.resp.Body)
	at.sse = &sseReader{br: br}
	for {
		kind, raw, data, err := at.sse.next()
		switch {
		case err == io.EOF:
			err = errEmptyStream
		case err != nil:
			err = streamFailure(err, ErrStreamCut)
		case len(at.held)+len(raw) > int(rq.h.opts.maxResponse):
			// Comments and pings are held back with the first event:
			// an upstream that sends nothing else must not grow them
			// without bound.
			err = errors.Join(ErrStreamTooLarge, &tooLargeError{"more than " + strconv.FormatInt(rq.h.opts.maxResponse, 10) + " bytes before the first event"})
		}
		if err != nil {
			return rq.transportOutcome(at, err, o.TTFB)
		}
		at.held = append(at.held, raw...)
		switch kind {
		case evNoise:
			continue
		case evData:
			at.ends.observe(data)
		case evDone:
			at.done = true
		case evError:
			p, _ := parseError(data)
			at.errEvent = true
			// A failed answer takes as long as reading its error, as for
			// a response body; a delivered stream's Total is not known at
			// its first event and stays 0.
			o.Status, o.Total = eventStatus(p), time.Since(at.start)
			rq.refine(&o, p.class())
			rq.logFailure(at, &o, nil)
		}
		break
	}
	if t.limits.Attempt > 0 {
		at.wd.setHard(at.start.Add(t.limits.Attempt), t.limits.Attempt)
	}
	at.wd.arm(PhaseIdle, t.limits.Idle)
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

// transportOutcome turns a transport error or a timeout into the attempt's outcome.
// The attempt's own timeouts are reported as the cause that fired.
func (rq *request) transportOutcome(at *attempt, err error, ttfb time.Duration) policy.Outcome {
	if cause := context.Cause(at.ctx); cause != nil {
		var te *TimeoutError
		switch {
		case errors.As(cause, &te):
			err = te
		case errors.Is(cause, engine.ErrAbandoned):
			err = cause // it lost to a hedge: say so, not "context canceled"
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
		zap.Bool("no_same_provider", o.NoSameProvider),
		zap.Duration("elapsed", time.Since(at.start)),
		zap.Error(err),
		zap.String("body_sha256", rq.bodySum()))
}

func isEventStream(h http.Header) bool { return mediaType(h) == "text/event-stream" }
