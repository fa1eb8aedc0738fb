package prom

import (
	"slices"
	"time"
)

// Option configures a Collector at New.
type Option func(*options)

type options struct {
	namespace    string
	latency      []float64
	wait         []float64
	stateTimeout time.Duration
}

// DefaultLatencyBuckets are the upper bounds, in seconds, of the time to
// first byte and total latency histograms: from 50 ms, a cached or very
// short answer, to 120 s, a long generation, roughly doubling.
var DefaultLatencyBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120}

// DefaultWaitBuckets are the upper bounds, in seconds, of the histogram of
// the waits the engine added before a retry. A failover without backoff
// waits 0 and lands in the first bucket; a honoured Retry-After may wait
// up to max_retry_after_seconds (60 s by default).
var DefaultWaitBuckets = []float64{0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60}

func defaults() options {
	return options{
		namespace:    "reroute",
		latency:      DefaultLatencyBuckets,
		wait:         DefaultWaitBuckets,
		stateTimeout: time.Second,
	}
}

// WithNamespace sets the prefix of every metric name (the default is
// "reroute": reroute_attempts_total). An empty namespace leaves the names
// unprefixed (attempts_total).
func WithNamespace(ns string) Option {
	return func(o *options) { o.namespace = ns }
}

// WithLatencyBuckets replaces DefaultLatencyBuckets for the time to first
// byte and total latency histograms. The bounds are in seconds; they are
// sorted and deduplicated. An empty list keeps the default.
func WithLatencyBuckets(bounds ...float64) Option {
	return func(o *options) {
		if len(bounds) > 0 {
			o.latency = sortedBounds(bounds)
		}
	}
}

// WithWaitBuckets replaces DefaultWaitBuckets for the histogram of waits
// before a retry, likewise.
func WithWaitBuckets(bounds ...float64) Option {
	return func(o *options) {
		if len(bounds) > 0 {
			o.wait = sortedBounds(bounds)
		}
	}
}

// WithStateTimeout bounds how long a scrape waits for the health actor's
// list of live blocks (the reroute_blocks_active gauge). The default is
// 1 s; the actor answers in microseconds unless it is stopped or
// overloaded. When it does not answer in time the gauge is left out of
// that scrape rather than guessed.
func WithStateTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.stateTimeout = d
		}
	}
}

func sortedBounds(b []float64) []float64 {
	b = slices.Clone(b)
	slices.Sort(b)
	return slices.Compact(b)
}
