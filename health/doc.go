// Package health keeps the process-wide health facts of docs/behaviour.md#block-state: which
// targets and providers are blocked by a Retry-After or by high latency,
// until when, the recent latency events that may create such a block, and
// passive health (docs/behaviour.md#passive-health): each identifier's
// failure streak, its ejection and the one probe of a half-open target.
// One goroutine owns every fact; request goroutines read immutable
// snapshots, claim probes and send reports without ever waiting for it.
//
// # Pieces
//
//   - [State] is the pure core: arrays indexed by the identifiers of a
//     [policy.Compiled], time passed in as unix nanoseconds, no goroutines,
//     clock or logging, not safe for concurrent use. Tests and the
//     simulator drive it directly.
//   - [Actor] owns one State in one goroutine. Reports reach it through
//     per-core buffers; it applies them in batches, logs every transition,
//     drops ended blocks periodically, and publishes a [Snapshot] through an
//     atomic pointer whenever a deadline changes.
//   - [Snapshot] is what requests read: for each target, the folded
//     deadline of the blocks covering it (its own and its provider's).
//     [Snapshot.Lookup] is an index and a compare, about a nanosecond.
//
// # Identifiers
//
// Target i of the configuration is identifier i; provider j is identifier
// NumTargets()+j ([policy.Compiled.ID] picks the one a scope uses). Every
// array is sized from the configuration, so memory is bounded by it: an
// identifier out of range is refused and counted, never stored, and no
// unknown name can enter. Latency events are kept in one ring per
// identifier whose capacity is the largest min_triggers configured.
//
// # What to report
//
// Only outcomes that can change the state go to the actor: a Retry-After
// (ReportRetryAfter with the capped deadline) and a latency event
// (ReportLatency with the rule of the policy that measured it). A success
// within the threshold sends nothing. The engine guarantees this; it is
// what keeps the actor idle on a healthy path. Reports are fire-and-forget
// and never waited on: when the buffer is full they are coalesced per
// identifier into a pending table the actor drains (Coalesced counts
// them), so a burst loses no Retry-After and no latency trigger. What can
// still be lost (see Dropped) is counted and logged at warn, rate-limited.
// WithOnBlock observes every block created.
//
// # Usage
//
//	h := health.New(compiled, health.WithLogger(log))
//	defer h.Stop()
//
//	// On the request path: Clear first, so a healthy target costs no
//	// clock read.
//	snap := h.Snapshot()
//	if !snap.Clear(t) {
//		now := coarseNow()
//		if st := snap.Lookup(t, now); st.Blocked(now) {
//			// wait until st.Until (retry_after), or move on;
//			// st.Latency: same_model exhausts (docs/behaviour.md#strategies)
//		}
//	}
//
//	// After an attempt that answered 429 with Retry-After: 30 under
//	// retry_after_handling {scope: provider, apply_to: global}:
//	h.ReportRetryAfter(compiled.ID(t, policy.ScopeProvider), now+30e9)
//
//	// Tests and shutdown paths: wait until every report so far is visible.
//	err := h.Sync(ctx)
//
// Blocks with apply_to: request are not this package's business: they live
// and die with one request, in the engine.
//
// # Facts of other replicas
//
// A host that runs several replicas can share the process-wide facts
// between them (package redishealth does it through Redis): WithFactSink
// has the actor send every [Fact] its own reports create to a channel,
// without waiting; [Actor.Import] hands it another replica's fact, which
// the actor applies on its goroutine with the same max-expiration merge
// ([State.Import] is the rule). Failure streaks are shared too: each
// failure that counts toward a streak is a strike and each success that
// ends one a clear ([Fact.Strike], [Fact.Clear]), which the importer counts
// with its own, so that a fleet ejects after the threshold's worth of
// failures in a row among all its replicas. Facts name targets and
// providers by name (a target id such as "openai/gpt-4o", a provider
// name), never by index; [MaxDuration] is what a configuration allows, to cap
// what is imported.
//
// # Times to first token
//
// For policies that hedge by percentile (docs/behaviour.md#hedging) the
// actor also keeps each target's recent times to first token: reported
// without waiting ([Actor.ReportTTFB]), kept in a [TTFBWindow] (the pure
// core, the last 128 per target) and published once per tick and on Sync
// as a table that [Actor.TTFB] reads with one atomic load.
//
// docs/architecture.md, section "Health state", explains the design and
// the measured costs behind it.
package health
