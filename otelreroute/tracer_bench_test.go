package otelreroute_test

import (
	"context"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/otelreroute"
	"github.com/reroute-go/reroute/policy"
)

// benchConfig is the engine benchmarks' configuration.
const benchConfig = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      on_status_codes: [{codes: [429, 503], strategy: different_provider, max_attempts: 2}]
  - model: anthropic/claude-3-5-sonnet
  - model: mistral/mistral-large
`

var timed = policy.Outcome{Status: 200, TTFB: 180 * time.Millisecond, Total: 900 * time.Millisecond}

func succeedTimed(context.Context, engine.Attempt) policy.Outcome { return timed }

// BenchmarkDoSuccess is the engine's benchmark of the same name (the first
// attempt succeeds, the call does nothing) with and without tracing, side
// by side: "bare" is the engine alone; "wrap" adds WrapCall only, under a
// request span started once outside the loop; "request" is what the HTTP
// adapter does per request, StartRequest, WrapCall and end. The no-op
// tracer is the API's default; the SDK samples every span and exports
// through a batch processor to an exporter that drops them.
func BenchmarkDoSuccess(b *testing.B) {
	cfg, _, err := policy.Parse([]byte(strings.TrimSpace(benchConfig)))
	if err != nil {
		b.Fatal(err)
	}
	e, err := engine.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	sdk := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer sdk.Shutdown(context.Background())
	for _, tp := range []struct {
		name string
		tp   trace.TracerProvider
	}{{"noop", noop.NewTracerProvider()}, {"sdk", sdk}} {
		tr := otelreroute.New(e.Compiled(), otelreroute.WithTracerProvider(tp.tp))
		for _, bc := range []struct {
			name string
			run  func() error
		}{
			{"bare", func() error {
				_, err := e.Do(context.Background(), "openai/gpt-4o", succeedTimed)
				return err
			}},
			{"wrap", func() func() error {
				ctx, _ := tr.StartRequest(context.Background(), "openai/gpt-4o") // one parent for every attempt
				call := tr.WrapCall(succeedTimed)
				return func() error {
					_, err := e.Do(ctx, "openai/gpt-4o", call)
					return err
				}
			}()},
			{"request", func() error {
				ctx, end := tr.StartRequest(context.Background(), "openai/gpt-4o")
				res, err := e.Do(ctx, "openai/gpt-4o", tr.WrapCall(succeedTimed))
				end(res, err)
				return err
			}},
		} {
			if bc.name == "bare" && tp.name != "noop" {
				continue
			}
			name := tp.name + "/" + bc.name
			if bc.name == "bare" {
				name = "bare"
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := bc.run(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
