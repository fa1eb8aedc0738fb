// Package httpproxy is an OpenAI-compatible HTTP front for the engine: an
// http.Handler that serves POST /v1/chat/completions, streaming (SSE) and
// not, and sends every upstream attempt the engine decides to the
// target's base_url.
//
// # Usage
//
//	cfg, _, err := policy.Load("reroute.yaml")
//	if err != nil {
//		return err
//	}
//	eng, err := engine.New(cfg, engine.WithLogger(logger))
//	if err != nil {
//		return err
//	}
//	h, err := httpproxy.New(eng, httpproxy.WithLogger(logger))
//	if err != nil {
//		return err
//	}
//	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: h}
//	// ... srv.ListenAndServe(); on exit: srv.Shutdown(ctx), eng.Close(),
//	// h.CloseIdleConnections().
//
// # What a request goes through
//
// The client's model names the primary: a target id ("openai/gpt-4o"), or
// a bare model name ("gpt-4o") that exactly one target has. A body that is
// not a JSON object, has no string model, names an unknown model or is
// over the size limit gets a 4xx OpenAI-shaped error; no upstream sees it.
//
// Each attempt sends the client's body to base_url + "/chat/completions":
// byte for byte when the body already names the target's model, otherwise
// with only the top-level model value replaced in place (ReplaceModel).
// Client credentials (Authorization, x-api-key, api-key, x-goog-api-key,
// anthropic-version) never go upstream; each target gets its own:
// Authorization: Bearer <access_key> (openai interface), x-api-key plus
// anthropic-version: 2023-06-01 (anthropic interface), or the client's own
// Authorization (passthrough_auth). Other headers pass through, and
// x-request-id is kept or generated.
//
// Timeouts run per attempt, in phases (connect, headers, first_token,
// idle, attempt; see Phase), from engine.timeouts with each provider's
// timeouts laid over them. A timeout is a failed attempt of the timeout
// class (on_timeout).
//
// Nothing reaches the client before the first byte of the answer that is
// delivered (docs/gateway.md#the-commit-rule): a response that is not a stream is read whole
// (bounded by WithMaxResponseBytes) before the engine decides on it; a
// 2xx stream is read up to its first event. After that commit, a failure
// of the stream is reported to the engine with Result.End; then, for a
// request that may be continued, the engine runs the continuation
// (engine.Engine.Continue) and its events follow, rewritten into the same
// answer (docs/gateway.md#continuing-a-cut-stream); otherwise, or when no
// target can continue, the client gets an in-band SSE error event, and
// the stream ends without [DONE].
//
// Error bodies refine the status: a content-policy refusal is returned at
// once (policy.Outcome.Final; WithContentPolicyFailover), a context-length
// rejection is never retried on the same target but may fail over
// (policy.Outcome.NoSameTarget; WithContextLengthFailover), and a response
// with x-should-retry: false is never retried on its provider but may fail
// over to another (policy.Outcome.NoSameProvider).
//
// The answer carries x-reroute-attempts (attempts made) and
// x-reroute-target (the target that answered). An exhausted request is
// rendered by engine.ExhaustedError.WriteHTTP (docs/behaviour.md#the-error-response).
package httpproxy
