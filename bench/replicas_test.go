package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Eight replicas on the fast outage: each succeeds at everything; sharing
// their facts wastes fewer attempts on the dead primary than each learning
// alone, and modelling the probe lock no more; a run is deterministic.
func TestReplicasSharing(t *testing.T) {
	sc := mustSample(t, "fast-outage.yaml")
	alone := mustSimulate(t, sc, Options{Replicas: 8}, BaselineNone)
	shared := mustSimulate(t, sc, Options{Replicas: 8, Share: true, ShareDelay: 5 * time.Millisecond}, BaselineNone)
	locked := mustSimulate(t, sc, Options{Replicas: 8, Share: true, ShareDelay: 5 * time.Millisecond, ProbeLockTTL: 5 * time.Second}, BaselineNone)
	const dead = "openai/gpt-4o"
	for _, r := range []*Result{alone, shared, locked} {
		if r.SuccessRate != 1 || r.Replicas != 8 {
			t.Fatalf("%s: success rate %v, replicas %d", r.label(), r.SuccessRate, r.Replicas)
		}
	}
	wasted := func(r *Result) int64 { return r.AttemptsByTarget[dead] - r.ServedByTarget[dead] }
	t.Logf("attempts on the dead primary that failed: alone %d, shared %d, shared with the probe lock %d", wasted(alone), wasted(shared), wasted(locked))
	if wasted(shared) >= wasted(alone) {
		t.Errorf("sharing wasted %d attempts on the dead primary, alone %d", wasted(shared), wasted(alone))
	}
	if wasted(locked) > wasted(shared) {
		t.Errorf("the probe lock wasted %d, more than sharing without it (%d)", wasted(locked), wasted(shared))
	}
	again := mustSimulate(t, sc, Options{Replicas: 8, Share: true, ShareDelay: 5 * time.Millisecond}, BaselineNone)
	if again.Attempts != shared.Attempts || again.LatencyMs != shared.LatencyMs {
		t.Error("the same replicated run gave two results")
	}
	// A delay longer than the outage is no sharing at all in effect.
	late := mustSimulate(t, sc, Options{Replicas: 8, Share: true, ShareDelay: time.Minute}, BaselineNone)
	if wasted(late) != wasted(alone) {
		t.Errorf("facts a minute late: %d wasted, alone %d", wasted(late), wasted(alone))
	}
}

// One replica is the ordinary run.
func TestOneReplicaIsTheDefault(t *testing.T) {
	sc := mustSample(t, "fast-outage.yaml")
	a := mustSimulate(t, sc, Options{}, BaselineNone)
	b := mustSimulate(t, sc, Options{Replicas: 1}, BaselineNone)
	if a.Attempts != b.Attempts || a.LatencyMs != b.LatencyMs || b.Replicas != 0 {
		t.Fatalf("Replicas: 1 changed the run: %d vs %d attempts", a.Attempts, b.Attempts)
	}
}

// Run with shared replicas puts the same replicas alone beside them, and
// the summary names both.
func TestRunReplicasShowsAloneBeside(t *testing.T) {
	sc := mustSample(t, "fast-outage.yaml")
	res, err := Run(context.Background(), sc, ModeSim, nil, Options{Requests: 600, Replicas: 4, Share: true, ShareDelay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Baselines) != 1 || res.Baselines[0].ShareDelayMs != nil || res.Baselines[0].Replicas != 4 {
		t.Fatalf("beside: %+v", res.Baselines)
	}
	var b strings.Builder
	if err := res.WriteSummary(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "reroute ×4 shared 5ms") || !strings.Contains(b.String(), "reroute ×4 alone") {
		t.Fatalf("summary:\n%s", b.String())
	}
	if _, err := Run(context.Background(), sc, ModeHTTP, nil, Options{Replicas: 2}); err == nil {
		t.Error("replicas in http mode accepted")
	}
}
