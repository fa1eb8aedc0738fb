package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/engine/httpproxy"
	"github.com/reroute-go/reroute/otelreroute"
)

// serviceName is the service.name of the gateway's spans unless
// OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES says otherwise.
const serviceName = "reroute-gateway"

// tracingShutdownTimeout bounds how long the exit waits for the last spans
// to be exported.
const tracingShutdownTimeout = 5 * time.Second

// tracing is the OpenTelemetry SDK the gateway runs when the standard
// environment variables ask for trace export (docs/gateway.md#tracing):
// an OTLP/HTTP exporter behind a batch processor, and the W3C trace
// context and baggage propagators. Its zero value, tracing off, adds no
// handler option and serves the handler as it is.
type tracing struct {
	tp   *sdktrace.TracerProvider
	prop propagation.TextMapPropagator
	tr   *otelreroute.Tracer // made for the engine by the first call of tracer
}

// tracingWanted decides from the environment whether to export traces,
// and says why not when a variable asks for what the gateway does not do.
func tracingWanted(getenv func(string) string) (on bool, why string) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false, ""
	}
	switch v := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); v {
	case "none":
		return false, ""
	case "", "otlp":
	default:
		return false, "OTEL_TRACES_EXPORTER=" + v + " is not supported (otlp or none)"
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			if v != "http/protobuf" {
				return false, k + "=" + v + " is not supported (http/protobuf)"
			}
			break // the traces variable overrides the general one
		}
	}
	if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return false, ""
	}
	return true, ""
}

// newTracing starts the SDK when the environment asks for it. The
// exporter reads its own variables (endpoint, headers, timeout,
// compression, certificates), the SDK the sampler's (OTEL_TRACES_SAMPLER)
// and the batch processor's (OTEL_BSP_*). Export errors are logged at
// warn.
func newTracing(ctx context.Context, getenv func(string) string, log *zap.Logger) (*tracing, error) {
	on, why := tracingWanted(getenv)
	if why != "" {
		log.Warn("tracing is off", zap.String("reason", why))
	}
	if !on {
		return &tracing{}, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("gateway: OTLP trace exporter: %w", err)
	}
	// Later sources win: the default name, then the environment's.
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", serviceName)),
		resource.WithFromEnv(),
		resource.WithTelemetrySDK())
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("gateway: trace resource: %w", err)
	}
	// Process-wide, like the SDK's own default handler it replaces:
	// there is one per process, and it needs no state of the gateway's
	// but its logger.
	l := log.Named("otel")
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { l.Warn("opentelemetry error", zap.Error(err)) }))
	log.Info("tracing on: exporting spans with OTLP/HTTP")
	return &tracing{
		tp:   sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)),
		prop: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
	}, nil
}

// options returns the handler options that trace e's requests; none when
// tracing is off.
func (tc *tracing) options(e *engine.Engine) []httpproxy.Option {
	if tc.tp == nil {
		return nil
	}
	tr := tc.tracer(e)
	return []httpproxy.Option{
		httpproxy.WithRequestTracer(tr.StartRequest),
		httpproxy.WithCallWrapper(tr.WrapCall),
		httpproxy.WithHeaderInjector(tr.Inject),
	}
}

// handler serves h with the client's trace context extracted, when
// tracing is on.
func (tc *tracing) handler(e *engine.Engine, h http.Handler) http.Handler {
	if tc.tp == nil {
		return h
	}
	return tc.tracer(e).Extract(h)
}

// tracer is the one Tracer of the engine, which run builds once.
func (tc *tracing) tracer(e *engine.Engine) *otelreroute.Tracer {
	if tc.tr == nil {
		tc.tr = otelreroute.New(e.Compiled(),
			otelreroute.WithTracerProvider(tc.tp),
			otelreroute.WithPropagator(tc.prop),
			otelreroute.WithOperation("chat"))
	}
	return tc.tr
}

// shutdown exports the spans still buffered and stops the SDK. The gateway
// calls it last, once the engine is closed and no request is in flight.
func (tc *tracing) shutdown(log *zap.Logger) {
	if tc.tp == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), tracingShutdownTimeout)
	defer cancel()
	if err := tc.tp.Shutdown(ctx); err != nil {
		log.Warn("tracing: spans may be lost at exit", zap.Error(err))
	}
}
