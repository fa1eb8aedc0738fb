package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/reroute-go/reroute/policy"
)

// Sentinel errors. Compare with errors.Is.
var (
	// ErrClosed is returned by Do after Close has been called, and by a Do
	// whose wait Close interrupted.
	ErrClosed = errors.New("reroute: engine closed")
	// ErrAbandoned is the cause with which the engine cancels the context
	// of an attempt that lost the race with its hedge
	// (docs/behaviour.md#hedging): context.Cause(ctx) of the loser's Call.
	ErrAbandoned = errors.New("reroute: attempt abandoned: another attempt of the request answered first")
	// ErrUnknownModel is returned by Do for a model that is not a
	// configured target.
	ErrUnknownModel = errors.New("reroute: unknown model")
	// ErrExhausted matches every *ExhaustedError.
	ErrExhausted = errors.New("reroute: retry attempts exhausted")
)

// Reason says why a request was exhausted (docs/behaviour.md#exhaustion-reasons).
type Reason string

// The exhaustion reasons.
const (
	// ReasonMaxAttempts: a failure counter reached its max_attempts, or a
	// same_model retry was needed after the request had left the primary.
	ReasonMaxAttempts Reason = "max_attempts_reached"
	// ReasonBudget: max_retry_duration_ms ran out, or the engine's retry
	// budget refused the retry.
	ReasonBudget Reason = "budget_exhausted"
	// ReasonProviders: no eligible target was left (all attempted,
	// blocked or not matching the strategy).
	ReasonProviders Reason = "providers_exhausted"
	// ReasonDeadline: the next wait or attempt could not finish before the
	// request's context deadline.
	ReasonDeadline Reason = "deadline"
	// ReasonRetryLimit: engine.max_retrying_requests requests were
	// already retrying, so this one got a single attempt (fail-open).
	ReasonRetryLimit Reason = "retrying_requests_limit"
)

// FailedAttempt is one failed attempt of an exhausted request.
type FailedAttempt struct {
	Target     string        // target id
	Number     int           // overall attempt number, from 1
	Status     int           // HTTP status; 0 for a timeout or transport error
	Class      policy.Class  // HTTPError, Timeout or LatencyFailure
	Latency    time.Duration // measured latency (TTFB or total per the policy; elapsed time for timeouts)
	Threshold  time.Duration // the on_high_latency threshold, for LatencyFailure
	RetryAfter time.Duration // the capped retry hint the response carried; 0 if none
	Err        error         // the transport error, for Timeout
}

// ErrorType renders the attempt as the error_type of the exhaustion body
// (docs/behaviour.md#exhaustion): http_<status>; timeout_<ms>ms for an
// attempt cut by a timeout after <ms> (plain "timeout" when its duration
// is unknown); transport_error for an attempt that failed without an
// answer and without timing out (connection refused, reset); or
// high_latency_<measured>ms_threshold_<threshold>ms.
func (a FailedAttempt) ErrorType() string {
	switch a.Class {
	case policy.Timeout:
		switch {
		case !a.TimedOut():
			return "transport_error"
		case a.Latency <= 0:
			return "timeout" // cut by a limit the engine did not time
		}
		return "timeout_" + strconv.FormatInt(a.Latency.Milliseconds(), 10) + "ms"
	case policy.LatencyFailure:
		return "high_latency_" + strconv.FormatInt(a.Latency.Milliseconds(), 10) + "ms_threshold_" + strconv.FormatInt(a.Threshold.Milliseconds(), 10) + "ms"
	}
	return "http_" + strconv.Itoa(a.Status)
}

// TimedOut reports whether a failed attempt without an answer (class
// Timeout) ended by a timeout, rather than by a transport error such as a
// refused or reset connection. An attempt without an error is taken as
// timed out.
func (a FailedAttempt) TimedOut() bool {
	if a.Err == nil || errors.Is(a.Err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(a.Err, &ne) && ne.Timeout()
}

// ExhaustedError is returned by Do when a request ends without an answer to
// deliver (docs/behaviour.md#the-error-response). errors.Is(err, ErrExhausted) holds for it, and so does
// errors.Is(err, context.DeadlineExceeded) when Reason is ReasonDeadline.
// Unwrap returns the last attempt's transport error, if any.
type ExhaustedError struct {
	Model    string // the requested primary
	Reason   Reason
	Attempts []FailedAttempt
	// MaxRetryAfter is the largest (capped) Retry-After seen; 0 if none.
	MaxRetryAfter time.Duration
	// ShortestBlock is the shortest remaining block among targets skipped
	// for being blocked; 0 if none was skipped.
	ShortestBlock time.Duration
	// BudgetExhausted reports that the time budget or the retry budget ran
	// out.
	BudgetExhausted bool
	// Ejected lists the targets skipped because passive health had them
	// ejected (docs/behaviour.md#passive-health); nil if none.
	Ejected []string
}

func (e *ExhaustedError) Error() string {
	msg := fmt.Sprintf("reroute: %s: all retry attempts exhausted (%s, %d attempts", e.Model, e.Reason, len(e.Attempts))
	if n := len(e.Attempts); n > 0 {
		msg += ", last " + e.Attempts[n-1].ErrorType()
	}
	return msg + ")"
}

// Is makes errors.Is(err, ErrExhausted) true, and errors.Is(err,
// context.DeadlineExceeded) true for ReasonDeadline.
func (e *ExhaustedError) Is(target error) bool {
	return target == ErrExhausted || (target == context.DeadlineExceeded && e.Reason == ReasonDeadline)
}

// Unwrap returns the last attempt's transport error, or nil.
func (e *ExhaustedError) Unwrap() error {
	if n := len(e.Attempts); n > 0 {
		return e.Attempts[n-1].Err
	}
	return nil
}

// Status is the HTTP status docs/behaviour.md#the-error-response renders the error as: the last
// attempt's status; 504 when the last failure was a timeout or latency
// event; 503 when there was no attempt at all.
func (e *ExhaustedError) Status() int {
	n := len(e.Attempts)
	if n == 0 {
		if e.Reason == ReasonDeadline {
			return http.StatusGatewayTimeout
		}
		return http.StatusServiceUnavailable
	}
	if last := e.Attempts[n-1]; last.Class == policy.HTTPError && last.Status != 0 {
		return last.Status
	}
	return http.StatusGatewayTimeout
}

// RetryAfterSeconds is the value of the Retry-After header docs/behaviour.md#the-error-response sends
// when no attempt was made: the shortest remaining block, rounded up to
// whole seconds. 0 means send none.
func (e *ExhaustedError) RetryAfterSeconds() int {
	if len(e.Attempts) > 0 || e.ShortestBlock <= 0 {
		return 0
	}
	return int(math.Ceil(e.ShortestBlock.Seconds()))
}

// Message is the message of docs/behaviour.md#the-error-response: "All retry attempts exhausted" with the
// applicable suffix.
func (e *ExhaustedError) Message() string {
	msg := "All retry attempts exhausted"
	switch {
	case e.BudgetExhausted:
		msg += ": retry budget exceeded"
	case len(e.Attempts) > 0 && e.Attempts[len(e.Attempts)-1].Class == policy.Timeout:
		if e.Attempts[len(e.Attempts)-1].TimedOut() {
			msg += ": upstream request timed out"
		} else {
			msg += ": upstream connection failed"
		}
	case e.Reason == ReasonDeadline:
		msg += ": request deadline exceeded"
	case len(e.Attempts) > 0 && e.Attempts[len(e.Attempts)-1].Class == policy.LatencyFailure:
		msg += ": upstream high latency detected"
	}
	return msg
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Message         string         `json:"message"`
	Type            string         `json:"type"`
	Attempts        []errorAttempt `json:"attempts"`
	TotalAttempts   int            `json:"total_attempts"`
	MaxRetryAfter   *float64       `json:"observed_max_retry_after_seconds,omitempty"`
	ShortestBlock   *float64       `json:"shortest_remaining_block_seconds,omitempty"`
	BudgetExhausted bool           `json:"retry_budget_exhausted"`
	Ejected         []string       `json:"ejected_targets,omitempty"`
}

type errorAttempt struct {
	Model     string `json:"model"`
	ErrorType string `json:"error_type"`
	Attempt   int    `json:"attempt"`
}

// Body is the JSON body of docs/behaviour.md#the-error-response. It never contains an upstream body or
// a credential: only target ids, error types and numbers.
func (e *ExhaustedError) Body() []byte {
	d := errorDetail{
		Message:         e.Message(),
		Type:            "retry_exhausted",
		Attempts:        make([]errorAttempt, len(e.Attempts)),
		TotalAttempts:   len(e.Attempts),
		BudgetExhausted: e.BudgetExhausted,
		Ejected:         e.Ejected,
	}
	for i, a := range e.Attempts {
		d.Attempts[i] = errorAttempt{Model: a.Target, ErrorType: a.ErrorType(), Attempt: a.Number}
	}
	if e.MaxRetryAfter > 0 {
		v := roundSeconds(e.MaxRetryAfter)
		d.MaxRetryAfter = &v
	}
	if e.ShortestBlock > 0 {
		v := roundSeconds(e.ShortestBlock)
		d.ShortestBlock = &v
	}
	b, _ := json.Marshal(errorBody{Error: d}) // plain structs: cannot fail
	return b
}

func roundSeconds(d time.Duration) float64 {
	return math.Round(d.Seconds()*1000) / 1000
}

// WriteHTTP renders the error as the HTTP response of docs/behaviour.md#the-error-response: status,
// content-type, x-request-id (when requestID is not empty), Retry-After when
// nothing could be attempted and a block's end is known, and the JSON body.
func (e *ExhaustedError) WriteHTTP(w http.ResponseWriter, requestID string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if requestID != "" {
		h.Set("X-Request-Id", requestID)
	}
	if s := e.RetryAfterSeconds(); s > 0 {
		h.Set("Retry-After", strconv.Itoa(s))
	}
	body := e.Body()
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.Status())
	_, _ = w.Write(body)
}

// PanicError is the error of a request whose call panicked. The engine
// recovers the panic so that one bad call cannot crash the process.
type PanicError struct {
	Target string
	Value  any
	Stack  []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("reroute: call for %s panicked: %v", e.Target, e.Value)
}
