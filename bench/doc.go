// Package bench is the harness of cmd/loadgen: it runs a scenario (a
// reroute configuration, a workload, and what each upstream target does
// over time) through the engine and measures what happened: attempts and
// successes per target, failures by reason, latency percentiles, and the
// blocks the health state held, as totals (Result, its JSON and its text
// summary) and over scenario time (the HTML report).
//
// # Usage
//
//	sc, err := bench.LoadScenario("bench/scenarios/rate-limited.yaml")
//	if err != nil {
//		return err // a *ScenarioError: every problem with its path and line
//	}
//	res, err := bench.Run(ctx, sc, bench.ModeSim, bench.Baselines, bench.Options{})
//	if err != nil {
//		return err
//	}
//	res.WriteSummary(os.Stdout)
//	res.WriteJSON(jsonFile)
//	res.WriteReport(htmlFile)
//
// # Modes
//
// Simulate (ModeSim) is a discrete-event simulation in virtual time: a
// min-heap of events (arrival, attempt start after a wait, attempt end,
// deadline, stream end) ordered by time and then by scheduling order, one
// engine.Machine per request in flight (slots reused), the engine's own
// decisions (engine.Engine.Begin, Machine.Start and Machine.Observe with
// Machine.SetNow) over a health.State applied synchronously
// (engine.WithHealth(engine.SyncHealth(...))), and seeded PCG sources for
// the arrivals, the upstreams' answers and the engine's random choices.
// The same scenario, seed and request count give the same Result, byte for
// byte in JSON, apart from its Wall section. It runs a few million
// requests a second and allocates next to nothing per request.
//
// RunHTTP (ModeHTTP) acts the same scenario out in real time: a loopback
// HTTP server per target plays its phases, the configuration's base_url
// values point at them, and the load goes through the HTTP adapter
// (engine/httpproxy) on a loopback server of its own.
//
// # Baselines
//
// Run can run hand-written retry loops on the same scenario beside
// reroute, to compare with. The naive baseline (BaselineNaive) is the
// retry loop most clients have: the primary, up to three attempts,
// immediately, whatever it answered. The naive-failover baseline
// (BaselineNaiveFailover) is what most people write when they have a
// fallback list: the naive loop on the primary, then the same loop on each
// of the primary's fallback_models in order. Neither keeps blocks, a
// budget or reads Retry-After. The engine cannot express them (it always
// honours Retry-After), so they are a small driver of their own in both
// modes, sharing one rule (baselineChain).
//
// A Scenario is immutable once parsed and may be run any number of times,
// also from several goroutines at once: every run builds its own engine,
// state and servers. A Result is a plain value; do not modify it while it
// is being written out.
package bench
