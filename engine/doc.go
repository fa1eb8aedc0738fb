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
// budget's clock) lives in a Machine on that goroutine's stack. The Machine
// makes every per-request decision (Start, Observe, and Cut and Interrupt
// for what the request's context or Close ended); Do only carries its steps
// out, and the simulator in bench/ drives the very same Machine in virtual
// time. The Machine does no I/O and never waits, but it is not pure: its
// effects on the rest of the process (health reports, counts, the retry
// budget, hooks, logs) all go through one env it shares with the engine
// (docs/architecture.md#every-decision-in-one-place).
//
// A policy with a hedge (docs/behaviour.md#hedging) is the exception to one
// goroutine per request: when an attempt's first token is late, the hedge's
// call runs on the goroutine of the engine's timer, beside the attempt, and
// Do waits for both before it returns. Machine.Hedge, Failed and Abandon
// are the decisions of that race.
//
// Each decision reads one view of the health actor's immutable snapshot (a
// pointer load and an index); a request reports only facts that change
// shared state: a Retry-After, a latency event, a failure that counts for
// passive health (docs/behaviour.md#passive-health), and a success only when
// its target has a streak or an ejection to end. A fast success on a healthy
// target reads no clock, takes no lock, sends nothing and allocates nothing.
//
// # Observability
//
// Request-path events (attempt failed, candidate skipped, fallback chosen,
// backoff delay, retry started and succeeded) are logged at debug level
// behind a level check cached at New; exhaustion at warn. A context made
// with WithRequestID puts its id on every line of that request. Hooks
// (WithHooks) report attempts, retries, continuations (Continue), exhaustions, blocks, ejections,
// recoveries, probes, stream ends and latency measurements for metrics
// (package prom builds a Prometheus collector on them), and Counts gives
// exact per-target attempts, successes and failures. Credentials and bodies
// are never logged.
package engine
