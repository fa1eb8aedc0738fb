package bench

import (
	"context"
	"fmt"
)

// The modes of Run.
const (
	ModeSim  = "sim"  // in-process, virtual time, deterministic
	ModeHTTP = "http" // loopback upstreams, the HTTP adapter, real time
)

// The baselines of Run.
const (
	BaselineNone  = ""
	BaselineNaive = "naive" // retry the same target twice at once, nothing else
)

// Run runs sc in mode (ModeSim or ModeHTTP) and, when baseline is
// BaselineNaive, runs the naive baseline on the same scenario afterwards
// and attaches it as the result's Baseline. ctx bounds an HTTP run; a
// simulation takes no time worth cancelling.
func Run(ctx context.Context, sc *Scenario, mode, baseline string, o Options) (*Result, error) {
	if baseline != BaselineNone && baseline != BaselineNaive {
		return nil, fmt.Errorf("loadgen: unknown baseline %q (want %q or none)", baseline, BaselineNaive)
	}
	var run func(naive bool) (*Result, error)
	switch mode {
	case ModeSim, "":
		run = func(naive bool) (*Result, error) { return Simulate(sc, o, naive) }
	case ModeHTTP:
		run = func(naive bool) (*Result, error) { return RunHTTP(ctx, sc, o, naive) }
	default:
		return nil, fmt.Errorf("loadgen: unknown mode %q (want %q or %q)", mode, ModeSim, ModeHTTP)
	}
	res, err := run(false)
	if err != nil {
		return nil, err
	}
	if baseline == BaselineNaive {
		if res.Baseline, err = run(true); err != nil {
			return nil, err
		}
	}
	return res, nil
}
