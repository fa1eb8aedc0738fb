package httpproxy

import (
	"errors"
	"io"
	"net/http"
	"strconv"
)

// Errors of a stream that failed after commit, as Result.End receives
// them. A stall or an attempt deadline arrives as a *TimeoutError instead.
var (
	// ErrStreamIncomplete: the upstream ended the stream without
	// "data: [DONE]" before every choice had its finish_reason (a clean
	// end after them is a complete answer).
	ErrStreamIncomplete = errors.New("reroute/httpproxy: upstream stream ended without [DONE]")
	// ErrStreamCut: the upstream connection failed inside the stream.
	ErrStreamCut = errors.New("reroute/httpproxy: upstream stream cut")
	// ErrStreamMalformed: the upstream sent something that is not a
	// chat completion SSE event: as the first event, or after commit one
	// more than MaxMalformedEvents.
	ErrStreamMalformed = errors.New("reroute/httpproxy: malformed upstream stream")
	// ErrStreamError: the upstream reported an error inside the stream.
	// Its event is relayed to the client as it was sent.
	ErrStreamError = errors.New("reroute/httpproxy: upstream reported an error in the stream")
	// ErrStreamTooLarge: the upstream sent an SSE line or event longer
	// than the handler's limit (MaxEventBytes), or more than
	// WithMaxResponseBytes of comments and pings before its first event.
	ErrStreamTooLarge = errors.New("reroute/httpproxy: upstream stream too large")
	// ErrBodyCut: the body of a response that is not a stream failed
	// before its end. Before commit it is a failed attempt (and, for a
	// target without retry_policy, a 502 upstream_body_cut); after commit,
	// for a body too large to be buffered, the client's response is
	// aborted.
	ErrBodyCut = errors.New("reroute/httpproxy: upstream response body cut")
)

// errEmptyStream is a stream that ended before its first event: a failed
// attempt, retried like a transport error.
var errEmptyStream = errors.New("reroute/httpproxy: upstream stream ended before its first event")

// errEndStreams is the cause a stream's attempt is cancelled with by
// EndStreams.
var errEndStreams = errors.New("reroute/httpproxy: the gateway is shutting down")

// streamFailure names a read failure of a stream: too large, malformed,
// an end without [DONE] (after commit, where cut is ErrStreamCut), or cut.
func streamFailure(err, cut error) error {
	var tl *tooLargeError
	switch {
	case errors.As(err, &tl):
		return errors.Join(ErrStreamTooLarge, err)
	case isMalformed(err):
		return errors.Join(ErrStreamMalformed, err)
	case err == io.EOF && cut == ErrStreamCut:
		return ErrStreamIncomplete
	}
	return errors.Join(cut, err)
}

// failureBeforeCommit is the code and message of the 502 a target without
// retry_policy answers with when its attempt failed without a response
// the handler could relay. Each failure says what happened: only an
// attempt that got no response at all is "unreachable".
func failureBeforeCommit(err error) (code, msg string) {
	var tl *tooLargeError
	switch {
	case errors.Is(err, ErrStreamTooLarge) && errors.As(err, &tl):
		return "upstream_response_too_large", "The upstream's stream exceeded this gateway's limit (" + tl.what + ") before its first event; nothing of it was delivered."
	case errors.Is(err, ErrStreamMalformed):
		return "upstream_stream_malformed", "The upstream sent a malformed stream before its first event; nothing of it was delivered."
	case errors.Is(err, errEmptyStream):
		return "upstream_stream_empty", "The upstream's stream ended before its first event."
	case errors.Is(err, ErrStreamCut):
		return "upstream_stream_cut", "The upstream's stream was cut before its first event; nothing of it was delivered."
	case errors.Is(err, ErrBodyCut):
		return "upstream_body_cut", "The upstream's answer was cut before its end; nothing of it was delivered."
	}
	return "upstream_unreachable", "The upstream could not be reached or failed before answering."
}

// streamErrorCode is the code of the in-band error event for a stream
// failure after commit.
func streamErrorCode(err error) string {
	var te *TimeoutError
	switch {
	case errors.As(err, &te):
		return te.code()
	case errors.Is(err, ErrStreamIncomplete):
		return "upstream_stream_incomplete"
	case errors.Is(err, ErrStreamMalformed):
		return "upstream_stream_malformed"
	case errors.Is(err, ErrStreamTooLarge):
		return "upstream_response_too_large"
	case errors.Is(err, errEndStreams):
		return "gateway_shutting_down"
	}
	return "upstream_stream_cut"
}

// streamErrorEvent renders the SSE event that tells the client its stream
// failed after commit, in the shape OpenAI uses inside a stream (which the
// official SDKs raise on). It carries no upstream bytes and no credential.
func streamErrorEvent(err error, requestID string) []byte {
	b := make([]byte, 0, 256)
	b = append(b, `data: {"error":{"message":`...)
	b = appendJSONString(b, streamErrorMessage(err))
	b = append(b, `,"type":"upstream_error","param":null,"code":`...)
	b = appendJSONString(b, streamErrorCode(err))
	if requestID != "" {
		b = append(b, `,"request_id":`...)
		b = appendJSONString(b, requestID)
	}
	return append(b, "}}\n\n"...)
}

func streamErrorMessage(err error) string {
	var te *TimeoutError
	switch {
	case errors.As(err, &te) && te.Phase == PhaseAttempt:
		return "The upstream stream exceeded the attempt timeout of " + te.Limit.String() + "; the answer is incomplete."
	case errors.As(err, &te):
		return "The upstream stream stalled for more than " + te.Limit.String() + "; the answer is incomplete."
	case errors.Is(err, ErrStreamIncomplete):
		return "The upstream stream ended without [DONE] before every choice had its finish_reason; the answer may be incomplete."
	case errors.Is(err, ErrStreamMalformed):
		return "The upstream sent more than " + strconv.Itoa(MaxMalformedEvents) + " malformed events; the answer is incomplete."
	case errors.Is(err, ErrStreamTooLarge):
		return "The upstream sent an event larger than this gateway's limit of " + strconv.Itoa(MaxEventBytes) + " bytes; the answer is incomplete."
	case errors.Is(err, errEndStreams):
		return "The gateway is shutting down; the answer is incomplete."
	}
	return "The upstream stream was cut; the answer is incomplete."
}

// writeError writes an OpenAI-shaped error response:
// {"error":{"message","type","param","code"}}. param and code are null when
// empty.
func writeError(w http.ResponseWriter, status int, requestID, typ, message, param, code string) {
	b := make([]byte, 0, 128+len(message))
	b = append(b, `{"error":{"message":`...)
	b = appendJSONString(b, message)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"param":`...)
	b = appendNullable(b, param)
	b = append(b, `,"code":`...)
	b = appendNullable(b, code)
	b = append(b, "}}"...)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if requestID != "" {
		h.Set("X-Request-Id", requestID)
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func appendNullable(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendJSONString(b, s)
}

// invalidRequest writes a 4xx for a request the handler refuses before any
// upstream sees it.
func invalidRequest(w http.ResponseWriter, status int, requestID, message, param, code string) {
	writeError(w, status, requestID, "invalid_request_error", message, param, code)
}
