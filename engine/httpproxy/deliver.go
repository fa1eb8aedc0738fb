package httpproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/reroute-go/reroute/engine"
)

// deliver relays the answer the engine delivered. It writes nothing
// before the attempt has produced its first byte: for a stream, Do
// returned at the first event; otherwise the body is already read. It
// returns the Result the answer ended with: res, or, for a stream that
// was continued, the last continuation's (its Attempts count every
// attempt of the request).
func (rq *request) deliver(w http.ResponseWriter, res engine.Result) engine.Result {
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
			code, msg := failureBeforeCommit(err)
			writeError(w, http.StatusBadGateway, rq.id, "server_error", msg, "", code)
		}
		return res
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
		return rq.relay(w, res, at)
	case !at.rest:
		h.Set("Content-Length", strconv.Itoa(len(at.held)))
		w.WriteHeader(at.resp.StatusCode)
		_, _ = w.Write(at.held)
	default:
		rq.relayBody(w, res, at)
	}
	return res
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
	// The held bytes have gone out: drop them (up to WithMaxResponseBytes)
	// for the rest of a relay that may last long, and copy through a small
	// buffer.
	at.held = nil
	buf := make([]byte, 32<<10)
	for {
		n, rerr := at.resp.Body.Read(buf)
		if n > 0 {
			at.wd.arm(PhaseIdle, at.t.limits.Idle)
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
// [DONE], or at a clean end of the body after every choice's finish_reason
// (choiceEnds), with a [DONE] added. Up to MaxMalformedEvents malformed
// events are skipped. A failure after commit (a cut, a stall past the idle
// timeout, one malformed event too many, any other end without [DONE]) is
// reported to the engine with Result.End; then, when the request may be
// continued (continuation.go), the engine runs the continuation and its
// events follow, rewritten to continue the same answer; otherwise the
// client gets an in-band error event, after which the stream is closed
// without [DONE]. An error event of the upstream's own is relayed as it
// was sent and ends the stream the same way.
func (rq *request) relay(w http.ResponseWriter, res engine.Result, at *attempt) engine.Result {
	rc := http.NewResponseController(w)
	w.WriteHeader(at.resp.StatusCode)
	if rq.cont != nil {
		rq.cont.observeEvents(at.held)
	}
	if _, err := w.Write(at.held); err != nil {
		return res
	}
	at.held = nil
	_ = rc.Flush()
	err := rq.pump(w, rc, res, at, false)
	for err != nil && err != errEndStreams && rq.cont != nil {
		var ok bool
		if res, at, ok = rq.continueStream(w, rc, res, err); !ok {
			break
		}
		err = rq.pump(w, rc, res, at, true)
	}
	if err != nil {
		_, _ = w.Write(streamErrorEvent(err, rq.id))
		_ = rc.Flush()
	}
	return res
}

// pump relays a committed stream's events after its held ones, until it
// ends. It returns nil when the stream is over (at [DONE], at a complete
// end without it, at an error event of the upstream's, or because the
// client has gone) and the failure after commit otherwise, already
// reported with res.End and logged (except errEndStreams, the gateway's
// shutdown, for which the target is not blamed). continued: the stream is
// a continuation, whose data events are rewritten to continue the answer
// the client has (continuation.rewrite).
func (rq *request) pump(w http.ResponseWriter, rc *http.ResponseController, res engine.Result, at *attempt, continued bool) error {
	switch {
	case at.done:
		res.End(time.Since(at.start), nil)
		return nil
	case at.errEvent:
		res.End(time.Since(at.start), ErrStreamError)
		rq.logCommitFailure(at, ErrStreamError)
		return nil
	}
	// EndStreams cancels the upstream request, which ends the read below.
	defer context.AfterFunc(rq.h.ending, func() { at.cancel(errEndStreams) })()
	for {
		kind, raw, data, err := at.sse.next()
		if err != nil {
			if rq.r.Context().Err() != nil {
				return nil // the client has gone; the upstream is not to blame
			}
			if isMalformed(err) && rq.skipMalformed(at, err) {
				continue
			}
			if err == io.EOF && at.ends.complete() && context.Cause(at.ctx) == nil {
				// A complete answer without [DONE]: the client gets the
				// [DONE] the upstream left out.
				rq.logStreamEnd(at, "reroute upstream stream ended without [DONE] after its finish_reason; delivered as complete")
				if _, err := w.Write([]byte(done)); err == nil {
					_ = rc.Flush()
				}
				res.End(time.Since(at.start), nil)
				return nil
			}
			err = rq.streamErr(at, err, ErrStreamCut)
			if err == errEndStreams {
				// Nor is it to blame for the gateway's shutdown.
				rq.h.log.Info("reroute stream ended by the gateway's shutdown", zap.String("request_id", rq.id), zap.String("target", at.t.id))
			} else {
				res.End(time.Since(at.start), err)
				rq.logCommitFailure(at, err)
			}
			return err
		}
		if kind != evNoise {
			at.wd.arm(PhaseIdle, at.t.limits.Idle)
		}
		if kind == evData {
			at.ends.observe(data)
			switch {
			case continued:
				raw = rq.cont.rewrite(data)
			case rq.cont != nil:
				rq.cont.observe(data)
			}
		}
		if _, err := w.Write(raw); err != nil {
			return nil
		}
		if at.sse.br.Buffered() == 0 || kind == evDone || kind == evError {
			if err := rc.Flush(); err != nil {
				return nil
			}
		}
		switch kind {
		case evDone:
			res.End(time.Since(at.start), nil)
			return nil
		case evError:
			res.End(time.Since(at.start), ErrStreamError)
			rq.logCommitFailure(at, ErrStreamError)
			return nil
		}
	}
}

// done is the end of an OpenAI-style stream, as the client gets it.
const done = "data: [DONE]\n\n"

// skipMalformed counts a malformed event of a committed stream and reports
// whether the relay skips it and goes on: it does for the first
// MaxMalformedEvents of them. The event is not relayed; a malformed event
// is not a token either, so the idle timer keeps running.
func (rq *request) skipMalformed(at *attempt, err error) bool {
	at.malformed++
	if f := rq.h.opts.hooks.Malformed; f != nil {
		f(at.t.id)
	}
	if at.malformed > MaxMalformedEvents {
		return false
	}
	if rq.h.debug {
		rq.h.log.Debug("reroute skipped a malformed stream event",
			zap.String("request_id", rq.id), zap.String("target", at.t.id),
			zap.Int("malformed", at.malformed), zap.Error(err))
	}
	return true
}

// logStreamEnd logs, at debug, a stream that ended well in a way worth
// knowing about.
func (rq *request) logStreamEnd(at *attempt, msg string) {
	if rq.h.debug {
		rq.h.log.Debug(msg, zap.String("request_id", rq.id), zap.String("target", at.t.id),
			zap.Duration("elapsed", time.Since(at.start)))
	}
}

// streamErr names a read failure after commit: the watchdog's timeout if
// it fired, EndStreams, a stream too large or malformed, an end without
// [DONE], or cut.
func (rq *request) streamErr(at *attempt, err, cut error) error {
	if cause := context.Cause(at.ctx); cause != nil {
		var te *TimeoutError
		switch {
		case errors.As(cause, &te):
			return te
		case cause == errEndStreams:
			return cause
		}
	}
	return streamFailure(err, cut)
}

func (rq *request) logCommitFailure(at *attempt, err error) {
	if ce := rq.h.log.Check(zap.WarnLevel, "reroute upstream failed after commit"); ce != nil {
		ce.Write(zap.String("request_id", rq.id), zap.String("target", at.t.id),
			zap.Duration("elapsed", time.Since(at.start)), zap.Error(err), zap.String("body_sha256", rq.bodySum()))
	}
}

// renderError renders an error of Do as the client's response.
func (rq *request) renderError(w http.ResponseWriter, err error) {
	var ex *engine.ExhaustedError
	var pe *engine.PanicError
	switch {
	case errors.As(err, &ex):
		w.Header().Set("X-Reroute-Attempts", strconv.Itoa(len(ex.Attempts)))
		ex.WriteHTTP(w, rq.id)
	case errors.Is(err, engine.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, rq.id, "server_error", "The gateway is shutting down; retry the request.", "", "gateway_closed")
	case errors.As(err, &pe):
		writeError(w, http.StatusInternalServerError, rq.id, "server_error", "The gateway failed while handling the request.", "", "internal_error")
	case rq.r.Context().Err() != nil && errors.Is(err, context.Canceled):
		// The client has gone: there is nobody to answer.
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, rq.id, "server_error", "The request's deadline passed before an upstream answered.", "", "deadline_exceeded")
	default:
		writeError(w, http.StatusBadGateway, rq.id, "server_error", "The gateway could not complete the request.", "", "bad_gateway")
	}
}
