package otelreroute

import "go.opentelemetry.io/otel/attribute"

// The span names. They are fixed: the target, the model and the attempt
// number are attributes, so that a backend groups every request, and every
// attempt, under one name.
const (
	SpanRequest = "reroute.request"
	SpanAttempt = "reroute.attempt"
)

// The attributes (docs/observability.md#tracing). The gen_ai.* and
// http.* keys are the OpenTelemetry semantic conventions' (GenAI, HTTP);
// gen_ai.provider.name replaces the older gen_ai.system, which is not
// recorded. The reroute.* keys are this package's own.
const (
	keyOperation  = attribute.Key("gen_ai.operation.name")
	keyProvider   = attribute.Key("gen_ai.provider.name")
	keyModel      = attribute.Key("gen_ai.request.model")
	keyStatus     = attribute.Key("http.response.status_code")
	keyErrorType  = attribute.Key("error.type")
	keyRequestID  = attribute.Key("reroute.request_id")
	keyPrimary    = attribute.Key("reroute.model")
	keyTarget     = attribute.Key("reroute.target")
	keyNumber     = attribute.Key("reroute.attempt.number")
	keyContinues  = attribute.Key("reroute.attempt.continuation")
	keyAbandoned  = attribute.Key("reroute.attempt.abandoned")
	keyClass      = attribute.Key("reroute.attempt.class")
	keyWait       = attribute.Key("reroute.wait_ms")
	keyRetryKind  = attribute.Key("reroute.retry.kind")
	keyRetryCause = attribute.Key("reroute.retry.reason")
	keyAttempts   = attribute.Key("reroute.attempts")
	keyServedBy   = attribute.Key("reroute.served_by")
	keyResult     = attribute.Key("reroute.result.class")
	keyReason     = attribute.Key("reroute.exhausted.reason")
	keyBudget     = attribute.Key("reroute.budget_exhausted")
	keyEjected    = attribute.Key("reroute.ejected_targets")
)

// The error.type values of a request that ended without an answer for
// another reason than exhaustion.
const (
	errRetryExhausted = "retry_exhausted" // the type of the exhaustion body (docs/behaviour.md#the-error-response)
	errCanceled       = "canceled"
	errDeadline       = "deadline_exceeded"
	errClosed         = "engine_closed"
	errPanic          = "panic"
	errUnknownModel   = "unknown_model"
	errOther          = "other"
)
