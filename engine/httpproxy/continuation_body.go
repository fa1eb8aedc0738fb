package httpproxy

import (
	"errors"

	"github.com/reroute-go/reroute/policy"
)

// This file builds continuation requests: the client's request with the
// text already delivered appended as the start of the answer, in the
// dialect of the target that continues (policy.Continuation); see
// docs/gateway.md#continuing-a-cut-stream.

// errNotBuilt is returned until the builders below are written.
var errNotBuilt = errors.New("continuation bodies are not built yet")

// continuationBody returns body (the client's request body, with the model
// already set for the continuing target) with text appended as the
// trailing assistant message in dialect d. Every byte outside the
// messages array is kept, except the members the dialect adds at the top
// level. It fails for a body that has no messages array, and for
// policy.ContinueNone.
func continuationBody(body []byte, d policy.Continuation, text string) ([]byte, error) {
	return nil, errNotBuilt
}

// notContinuable says why a request can never be continued, whatever the
// target ("" when it can): several choices (n > 1), logprobs, a JSON or
// structured-output response_format, no messages array. It reads the
// request body once, when the request arrives.
func notContinuable(body []byte) string {
	return "continuation bodies are not built yet"
}

// rejectsContinuation reports whether an upstream's answer (status and
// body) says it does not accept a continuation (a trailing assistant
// message), as opposed to an ordinary failure.
func rejectsContinuation(status int, body []byte) bool {
	return false
}
