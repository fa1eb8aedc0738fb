package engine

import (
	"time"

	"go.uber.org/zap"

	"github.com/reroute-go/reroute/policy"
)

// Result is the delivered attempt of a request.
type Result struct {
	Target   string         // the target that served
	Attempts int            // attempts made, the served one included (a hedge counts)
	Number   int            // the served attempt's number (Attempt.Number): with a hedge, which of the calls won
	Outcome  policy.Outcome // the served attempt's outcome
	Class    policy.Class   // Success, SlowSuccess or PassThrough

	env     *env
	shard   *shard
	rules   *policy.Rules
	target  int32
	primary int32 // the request's primary: a continuation runs under its rules
	// cont is set on a continuation's Result: the failures after commit
	// before it, with which Engine.Continue bounds the next one.
	cont *resumed
}

// Retried reports whether the request needed more than one attempt.
func (r Result) Retried() bool { return r.Attempts > 1 }

// End reports how a streamed answer ended, after the caller has relayed its
// body: total is the attempt's whole duration, err a failure after commit
// (a cut stream, a stall past the idle timeout) or nil. The engine never
// retries a committed answer (it may continue it: Engine.Continue, called
// after End); End lets the shared health state learn from it: a measure:
// total latency event, the counts, where an answer that failed after
// commit moves from the target's successes to its failures, and for such
// a failure a failure of the target for passive health. Call it at most
// once; it is safe to skip for answers that are not streamed.
func (r Result) End(total time.Duration, err error) {
	v := r.env
	if v == nil {
		return
	}
	if v.hooks.End != nil {
		v.hooks.End(EndEvent{Target: r.Target, Index: int(r.target), Total: total, Err: err})
	}
	if err != nil {
		r.shard.add(int(r.target), countSuccesses, -1)
		r.shard.count(int(r.target), countFailures)
		// A cut or a stall is a transport failure of the target like one
		// before commit: passive health counts it, so that a target that
		// keeps dropping streams is taken out of the way, and a
		// continuation (Engine.Continue) decides on a view that has it.
		if id := v.ejID[r.target]; id >= 0 {
			v.health.ReportFailure(int(id), v.now())
		}
		if v.debug {
			v.log.Debug("reroute failure after commit", zap.String("target", r.Target), zap.Duration("elapsed", total), zap.Error(err))
		}
	}
	if r.rules == nil || r.rules.Latency == nil {
		return
	}
	l := r.rules.Latency
	if l.Measure != policy.MeasureTotal {
		return
	}
	if v.hooks.Latency != nil {
		v.hooks.Latency(r.Target, total)
	}
	if total <= l.Threshold || l.ApplyTo != policy.ApplyGlobal {
		return
	}
	v.health.ReportLatency(v.c.ID(int(r.target), l.Scope), v.now(), l.MinTriggers, l.Window, l.Block)
}
