// Package otelreroute traces requests run through an engine with
// OpenTelemetry: one span per request and, as its children, one span per
// attempt, whose context reaches the upstream (traceparent) through the
// host's HTTP client or the HTTP adapter's header injector. It imports
// only the OpenTelemetry API: a host that installs no SDK gets the API's
// no-op tracer, and the engine, the health actor and the HTTP adapter
// know nothing of OpenTelemetry.
//
// # Usage
//
// With the HTTP adapter:
//
//	tr := otelreroute.New(eng.Compiled(),
//		otelreroute.WithTracerProvider(tp), // an SDK provider; default otel.GetTracerProvider()
//		otelreroute.WithPropagator(propagation.TraceContext{}),
//		otelreroute.WithOperation("chat"))
//	h, err := httpproxy.New(eng,
//		httpproxy.WithRequestTracer(tr.StartRequest),
//		httpproxy.WithCallWrapper(tr.WrapCall),
//		httpproxy.WithHeaderInjector(tr.Inject))
//	http.Handle(httpproxy.Path, tr.Extract(h)) // continue the client's trace, if it sent one
//
// With the engine alone:
//
//	ctx, end := tr.StartRequest(ctx, "openai/gpt-4o")
//	res, err := eng.Do(ctx, "openai/gpt-4o", tr.WrapCall(func(ctx context.Context, a engine.Attempt) policy.Outcome {
//		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
//		tr.Inject(ctx, req.Header) // ctx carries the attempt's span
//		// ... send req, return its outcome
//	}))
//	end(res, err)
//
// # Spans and attributes
//
// docs/observability.md#tracing lists every span and attribute. Attributes
// take only values from the configuration (target ids, provider and model
// names), numbers, and fixed sets of words (outcome classes, exhaustion
// reasons, error types): never a body, a prompt, a header, a credential or
// an error's text, which for a transport error names the upstream URL, and
// a base_url may carry a key in its query.
//
// # Cost
//
// An attempt is traced only when its context carries a recording span
// (the request span, or a host's own): under the no-op tracer, or for a
// request the sampler dropped, WrapCall's call is one context lookup and a
// direct call, with no allocation. BenchmarkDoSuccess measures both cases
// and the SDK's.
package otelreroute
