// Package redishealth shares the health facts of a reroute engine between
// the replicas of a gateway through one Redis server, so that an outage
// one replica learns (a Retry-After, a latency block, an ejection) is
// skipped by all of them, and a recovery is known by all. It is the one
// package of the module that imports go-redis; the core packages do not
// (docs/shared-health.md).
//
// # How
//
// The engine's health actor exports every fact its own reports create to
// the Sharer through a bounded queue (health.WithFactSink; a full queue
// drops and counts, the actor never waits). The Sharer sends them in
// batches to a pub/sub channel and keeps each in a key of its own whose
// TTL is the fact's time left, written with the actors' max-expiration
// merge. It subscribes to the channel and hands the other replicas' facts
// to the actor with health.Actor.Import, which never blocks either; the
// actor applies them on its goroutine like its own. Requests read the
// actor's snapshot only: no request ever waits for Redis.
//
// Facts carry the time left, not a deadline, so clocks apart do not
// matter; they name targets and providers by name, not index, so replicas with
// different configurations can share a Redis: a name or rule a replica
// does not have is ignored, and every duration is capped by the
// receiver's own maximum. Messages are checked field by field; anything
// malformed, oversized or absurd is dropped and counted. A replica ignores
// its own messages by a random id per process.
//
// At every (re)connection a replica writes its live facts back (a
// restarted Redis has none) and loads the stored ones. When Redis is down
// it serves on its own state and reconnects with backoff.
//
// Failure streaks are the fleet's: every failure that counts toward a
// streak is published as a strike and every success that ends one as a
// clear, and each replica counts the others' with its own, so the fleet
// ejects after the threshold's worth of failures in a row among all of
// them. These are published only, never stored.
//
// With probe_lock, shortly before an ejection's cooldown ends each
// replica tries the identifier's lock in Redis (SET NX PX); the winner
// probes the target, the others hold it ejected until the winner's outcome
// arrives as a fact or the lock expires: about one probe per cooldown for
// the fleet. The winner releases the lock with its outcome. A recovery
// made while Redis was unreachable is replayed at the reconnection unless
// a stored ejection may be newer. Every recovery also leaves a mark in
// Redis, so that a replica that missed its message (it was reconnecting)
// ends its own copy of the ejection at its connection instead of writing
// it back (recovered.go).
//
// # Usage
//
//	cfg, _, err := policy.Load("reroute.yaml") // with engine.shared_health
//	s, err := redishealth.New(cfg.Engine.SharedHealth, cfg.Compiled(), redishealth.WithLogger(log))
//	e, err := engine.New(cfg, s.EngineOption())
//	err = s.Start(e.Actor()) // connects in the background
//	defer e.Close()
//	defer s.Close()
//
// Stats reports the connection, the facts sent and received, the drops
// by reason and the propagation delay. The redistest package starts a
// real redis-server for tests.
package redishealth
