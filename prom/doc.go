// Package prom exports an engine's hooks and live health state as
// Prometheus metrics. It is the only package of the module that imports
// the Prometheus client: the engine itself knows nothing of it, and an
// engine built without these hooks pays nothing for them (its hook fields
// are nil and skipped).
//
// # Usage
//
//	cfg, warnings, err := policy.Load("reroute.yaml")
//	// ... handle err and warnings
//	col := prom.New(cfg.Compiled())
//	eng, err := engine.New(cfg, engine.WithHooks(col.Hooks()))
//	// ... handle err; defer eng.Close()
//	if err := col.Attach(eng); err != nil {
//		return err
//	}
//	reg := prometheus.NewRegistry() // the host's own registry, never a global one
//	reg.MustRegister(col)
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// # Metrics
//
// Every metric, its type, labels and meaning are listed in
// docs/observability.md. Labels take only the configuration's target ids
// and provider names and fixed sets of values (outcome classes,
// exhaustion reasons, block kinds), and every series exists from New on:
// the number of series is set by the configuration, never by what clients
// send.
//
// Counters and histograms are fed by the hooks as events happen. Three
// things are read from the attached engine at each scrape instead: the
// blocks and ejections live now, asked of the health actor (a gauge of the
// state, not a reconstruction from Block and Ejected events, which would
// have to guess when a block ends or is extended); the per-target counts of
// Engine.Counts; and the actor's dropped and coalesced reports.
//
// A retry-budget refusal ends a request as exhausted with reason
// budget_exhausted, so reroute_exhaustions_total{reason="budget_exhausted"}
// counts them (together with requests whose max_retry_duration_ms ran out:
// the engine reports both as the one reason).
package prom
