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

// Run runs sc in mode (ModeSim or ModeHTTP) through reroute, then each of
// baselines (BaselineNaive, BaselineNaiveFailover; see baselineChain for
// their rule) on the same scenario, one after the other in the order
// given, and attaches them to the result as its Baselines. A nil or empty
// list runs reroute alone. ctx bounds an HTTP run; a simulation takes no
// time worth cancelling.
func Run(ctx context.Context, sc *Scenario, mode string, baselines []string, o Options) (*Result, error) {
	for _, b := range baselines {
		if b == BaselineNone {
			return nil, fmt.Errorf("loadgen: an empty baseline name in %q", baselines)
		}
		if err := checkBaseline(b); err != nil {
			return nil, err
		}
	}
	if o.Replicas > 1 && mode == ModeHTTP {
		return nil, fmt.Errorf("loadgen: several replicas run in sim mode only")
	}
	var run func(baseline string) (*Result, error)
	switch mode {
	case ModeSim, "":
		run = func(baseline string) (*Result, error) { return Simulate(sc, o, baseline) }
	case ModeHTTP:
		run = func(baseline string) (*Result, error) { return RunHTTP(ctx, sc, o, baseline) }
	default:
		return nil, fmt.Errorf("loadgen: unknown mode %q (want %q or %q)", mode, ModeSim, ModeHTTP)
	}
	res, err := run(BaselineNone)
	if err != nil {
		return nil, err
	}
	if o.Replicas > 1 && o.Share {
		// The same replicas without sharing, beside: the difference
		// sharing makes on the same scenario and seed.
		alone := o
		alone.Share = false
		ar, err := Simulate(sc, alone, BaselineNone)
		if err != nil {
			return nil, err
		}
		res.Baselines = append(res.Baselines, ar)
	}
	for _, b := range baselines {
		br, err := run(b)
		if err != nil {
			return nil, err
		}
		res.Baselines = append(res.Baselines, br)
	}
	return res, nil
}
