package otelreroute

import (
	"github.com/benbjohnson/clock"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Option configures a Tracer at New.
type Option func(*options)

type options struct {
	provider  trace.TracerProvider
	prop      propagation.TextMapPropagator
	clock     clock.Clock
	operation string
}

// WithTracerProvider sets the provider the spans are made with. The
// default is otel.GetTracerProvider() at New: the global provider, a
// no-op until a host installs an SDK.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) {
		if tp != nil {
			o.provider = tp
		}
	}
}

// WithPropagator sets the propagator Inject and Extract use. The default
// is otel.GetTextMapPropagator() at New, which propagates nothing until a
// host sets one; cmd/gateway uses W3C trace context and baggage.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(o *options) {
		if p != nil {
			o.prop = p
		}
	}
}

// WithClock sets the clock the spans' start and end times (and so
// reroute.wait_ms) are read from. The default is the real clock. The
// tracer reads it exactly twice per span, at its start and at its end.
func WithClock(c clock.Clock) Option {
	return func(o *options) {
		if c != nil {
			o.clock = c
		}
	}
}

// WithOperation sets gen_ai.operation.name on every span ("chat" for the
// HTTP adapter, which serves chat completions). The default, "", records
// none: the engine does not know what its calls do.
func WithOperation(name string) Option {
	return func(o *options) { o.operation = name }
}

func defaultOptions() options {
	return options{provider: otel.GetTracerProvider(), prop: otel.GetTextMapPropagator(), clock: clock.New()}
}
