package httpproxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
)

// bodyClass is what an upstream error body says about the request, beyond
// its status (docs/gateway.md#error-classes-how-bodies-refine-classification).
type bodyClass uint8

const (
	bodyOther bodyClass = iota
	// bodyContentPolicy: the prompt was refused by a safety system. Any
	// target given the same bytes is expected to refuse it too, and
	// sending it elsewhere would override a deliberate refusal.
	bodyContentPolicy
	// bodyContextLength: the prompt does not fit this model's window.
	// Retrying the same model cannot help; a model with a larger window
	// may accept it.
	bodyContextLength
)

func (c bodyClass) String() string {
	switch c {
	case bodyContentPolicy:
		return "content_policy"
	case bodyContextLength:
		return "context_length"
	}
	return "other"
}

// maxClassifyBytes bounds how much of an error body is parsed to classify
// it. Provider error bodies are a few hundred bytes.
const maxClassifyBytes = 64 << 10

// errorFields are the fields of OpenAI-, Azure-, Anthropic- and
// OpenRouter-shaped error objects that say what went wrong. code may be a
// string, a number or null.
type errorFields struct {
	Message    string          `json:"message"`
	Type       string          `json:"type"`
	Code       json.RawMessage `json:"code"`
	InnerError struct {
		Code string `json:"code"`
	} `json:"innererror"`
	Metadata struct {
		ErrorType string `json:"error_type"`
	} `json:"metadata"`
}

// errorEnvelope is a whole error body: OpenAI {"error": {...}}, Anthropic
// {"type": "error", "error": {...}}; some servers send "error" as a plain
// string.
type errorEnvelope struct {
	Error   json.RawMessage `json:"error"`
	Message string          `json:"message"`
}

// parsedError is the normalized content of an error body: lower-cased
// type, code and message.
type parsedError struct {
	typ, code, inner, meta, message string
}

// parseError extracts the error fields of body. A body that is not JSON
// (an HTML page from a load balancer) yields its text as the message.
func parseError(body []byte) (p parsedError, isJSON bool) {
	if len(body) > maxClassifyBytes {
		body = body[:maxClassifyBytes]
	}
	var env errorEnvelope
	if json.Unmarshal(body, &env) != nil {
		return parsedError{message: strings.ToLower(string(body))}, false
	}
	var f errorFields
	switch {
	case len(env.Error) > 0 && env.Error[0] == '{':
		_ = json.Unmarshal(env.Error, &f)
	case len(env.Error) > 0 && env.Error[0] == '"':
		_ = json.Unmarshal(env.Error, &f.Message)
	default:
		f.Message = env.Message
	}
	code := string(bytes.Trim(f.Code, `"`))
	if code == "null" {
		code = ""
	}
	return parsedError{
		typ:     strings.ToLower(f.Type),
		code:    strings.ToLower(code),
		inner:   strings.ToLower(f.InnerError.Code),
		meta:    strings.ToLower(f.Metadata.ErrorType),
		message: strings.ToLower(f.Message),
	}, true
}

// Message fragments, lower case, as the providers' error bodies word
// them (docs/gateway.md#error-classes-how-bodies-refine-classification).
var (
	contentPolicyCodes   = []string{"content_policy_violation", "invalid_prompt", "content_filter", "responsibleaipolicyviolation"}
	contentPolicyPhrases = []string{
		"content_policy_violation",
		"responsibleaipolicyviolation",
		"flagged as potentially violating our usage policy",
		"your request was rejected as a result of our safety system",
		"content management policy",
		"content filtering policy",
		"content exists risk",
	}
	contextLengthPhrases = []string{
		"context_length_exceeded",
		"maximum context length",
		"context window",
		"context limit",
		"prompt is too long",
		"input is too long",
		"exceeds the maximum number of tokens",
		"input token count",
		"longer than the model's context length",
		"max_new_tokens` must be <=",
		"reduce the length of the messages",
	}
	// A throttling message can mention tokens and limits too; it is never
	// a context-length rejection.
	throttlePhrases = []string{"rate limit", "too many requests", "throttl", "please wait", "per min"}
)

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// classifyBody classifies an error response by its status and body.
// Only request faults are refined: 401/402/404/408/409/429 and 5xx keep
// their status meaning whatever the body says.
func classifyBody(status int, body []byte) bodyClass {
	if status < 400 || status > 499 {
		return bodyOther
	}
	switch status {
	case 401, 402, 404, 408, 409, 429:
		return bodyOther
	}
	p, _ := parseError(body)
	return p.class()
}

func (p parsedError) class() bodyClass {
	for _, c := range contentPolicyCodes {
		if p.code == c || p.inner == c {
			return bodyContentPolicy
		}
	}
	if containsAny(p.message, contentPolicyPhrases) {
		return bodyContentPolicy
	}
	if p.code == "context_length_exceeded" || p.meta == "context_length_exceeded" {
		return bodyContextLength
	}
	if !containsAny(p.message, throttlePhrases) && containsAny(p.message, contextLengthPhrases) {
		return bodyContextLength
	}
	return bodyOther
}

// eventStatus maps an error that arrived as an SSE event inside a 200
// stream to the HTTP status the same error carries when it is sent as a
// response (providers' error events carry the same codes as their HTTP
// errors), so that on_status_codes rules apply to it.
func eventStatus(p parsedError) int {
	for _, k := range [...]string{p.code, p.typ} {
		switch k {
		case "rate_limit_exceeded", "rate_limit_error", "rate_limited", "tokens", "requests", "slow_down", "resource_exhausted", "429":
			return http.StatusTooManyRequests
		case "overloaded_error":
			return 529
		case "service_unavailable_error", "server_is_overloaded", "unavailable", "503":
			return http.StatusServiceUnavailable
		case "timeout_error", "deadline_exceeded", "504":
			return http.StatusGatewayTimeout
		case "api_error", "server_error", "internal_error", "internal", "500":
			return http.StatusInternalServerError
		case "invalid_request_error", "invalid_argument", "400":
			return http.StatusBadRequest
		case "insufficient_quota", "billing_error":
			return http.StatusPaymentRequired
		case "authentication_error", "invalid_api_key", "401":
			return http.StatusUnauthorized
		case "permission_error", "403":
			return http.StatusForbidden
		case "not_found_error", "model_not_found", "404":
			return http.StatusNotFound
		}
	}
	return http.StatusBadGateway
}

// shouldNotRetry reports a response header x-should-retry: false, which the
// official OpenAI and Anthropic SDKs obey over the status code. The handler
// reads it as "do not send to this provider again" (Outcome.NoSameProvider):
// the SDKs' retries go to the same provider, a failover does not.
func shouldNotRetry(h http.Header) bool {
	v := h.Get("X-Should-Retry")
	return v != "" && strings.EqualFold(strings.TrimSpace(v), "false")
}
