// Package engine is reroute's public entry point: New builds an Engine from
// a policy.Config, Do runs one LLM request through attempts, waits and
// failover, and Close stops it.
//
// # Usage
//
//	cfg, warnings, err := policy.Load("reroute.yaml")
//	if err != nil {
//		return err
//	}
//	eng, err := engine.New(cfg, engine.WithLogger(logger))
//	if err != nil {
//		return err
//	}
//	defer eng.Close()
//
//	res, err := eng.Do(ctx, "openai/gpt-4o", func(ctx context.Context, a engine.Attempt) policy.Outcome {
//		resp, err := client.Send(ctx, a.Provider.BaseURL, a.Model, body)
//		if err != nil {
//			return policy.Outcome{Err: err}
//		}
//		return policy.Outcome{Status: resp.StatusCode, Header: resp.Header}
//	})
//	var ex *engine.ExhaustedError
//	if errors.As(err, &ex) {
//		ex.WriteHTTP(w, requestID) // docs/behaviour.md#the-error-response: status, Retry-After, JSON body
//	}
//
// # The request path
//
// Each request is owned by the goroutine that calls Do: its state (attempts,
// failure counters per classification key, facts of its own, the time
// budget's clock) lives in a Machine on that goroutine's stack. A Machine is
// a pure step function, outcome in and next step out, so the simulator in
// bench/ drives the very same decisions in virtual time.
//
// Before an attempt the machine reads the health actor's immutable snapshot
// (a pointer load and an index); it reports only facts that change shared
// state, a Retry-After or a latency event, and those as non-blocking sends.
// A fast success on a healthy target reads no clock, takes no lock, sends
// nothing and allocates nothing.
//
// # Observability
//
// Request-path events (attempt failed, candidate skipped, fallback chosen,
// backoff delay, retry started and succeeded) are logged at debug level
// behind a level check cached at New; exhaustion at warn. A context made
// with WithRequestID puts its id on every line of that request. Hooks
// (WithHooks) report attempts, retries, exhaustions, blocks and latency
// measurements for metrics, and Counts gives exact per-target attempts,
// successes and failures. Credentials and bodies are never logged.
package engine
