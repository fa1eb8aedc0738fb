package bench

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/reroute-go/reroute/health"
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

// The fleet's failures count together: eight sharing replicas eject the
// dead primary of the fast outage after about as many wasted attempts as
// one replica serving all the traffic, not after each replica's own
// streak (which successes of attempts begun before the outage keep
// breaking: alone, eight replicas waste about ten times as many).
func TestReplicasShareFailureStreaks(t *testing.T) {
	sc := mustSample(t, "fast-outage.yaml")
	one := mustSimulate(t, sc, Options{}, BaselineNone)
	const dead = "openai/gpt-4o"
	wasted := func(r *Result) int64 { return r.AttemptsByTarget[dead] - r.ServedByTarget[dead] }
	var firstEjection int64
	var beforeEjection int
	shared := mustSimulate(t, sc, Options{Replicas: 8, Share: true, ShareDelay: 5 * time.Millisecond, ProbeLockTTL: 5 * time.Second,
		onReplica: func(ev replicaEvent) {
			switch {
			case ev.Kind == "ejected" && firstEjection == 0:
				firstEjection = ev.At
			case ev.Kind == "strike" && firstEjection == 0:
				beforeEjection++
			}
		}}, BaselineNone)
	alone := mustSimulate(t, sc, Options{Replicas: 8}, BaselineNone)
	t.Logf("wasted on the dead primary: one replica %d, eight alone %d, eight shared %d (%d before the first ejection)",
		wasted(one), wasted(alone), wasted(shared), beforeEjection)
	if wasted(shared) > wasted(one)+8 {
		t.Errorf("eight sharing replicas wasted %d attempts, one replica %d", wasted(shared), wasted(one))
	}
	if wasted(alone) < 4*wasted(shared) {
		t.Errorf("alone %d, shared %d: sharing saved little", wasted(alone), wasted(shared))
	}
	if firstEjection == 0 || firstEjection-epoch > int64(10500*time.Millisecond) {
		t.Errorf("first ejection at %v, want within half a second of the outage", time.Duration(firstEjection-epoch))
	}
}

// With the probe lock, each ejection's cooldown ends in one probe for the
// fleet: the probes that fail (the next ejections) come from the lock's
// holder alone, every other replica holds until the holder's outcome
// reaches it, and the holder's recovery reaches every replica one share
// delay later, never after the hold has let it probe on its own.
func TestReplicasOneProbePerEjection(t *testing.T) {
	sc := mustSample(t, "fast-outage.yaml")
	const delay = 5 * time.Millisecond
	var evs []replicaEvent
	mustSimulate(t, sc, Options{Replicas: 8, Share: true, ShareDelay: delay, ProbeLockTTL: 5 * time.Second,
		onReplica: func(ev replicaEvent) { evs = append(evs, ev) }}, BaselineNone)
	probesFailed := map[int][]int{} // ejection number → replicas whose probe failed
	won := map[int]int{}            // replica → locks won
	var recovered, received []replicaEvent
	for _, ev := range evs {
		switch ev.Kind {
		case "ejected":
			if ev.Ejections > 1 {
				probesFailed[ev.Ejections] = append(probesFailed[ev.Ejections], ev.Replica)
			}
		case "lock won":
			won[ev.Replica]++
		case "recovered":
			recovered = append(recovered, ev)
		case "recovery received":
			received = append(received, ev)
		}
	}
	if len(probesFailed) == 0 {
		t.Fatal("no probe failed during a 30 s outage")
	}
	for n, reps := range probesFailed {
		if len(reps) != 1 {
			t.Errorf("ejection %d: probes of %v failed, want one replica's", n, reps)
		}
	}
	if len(recovered) != 1 {
		t.Fatalf("recovered on %d replicas by their own probe, want 1: %+v", len(recovered), recovered)
	}
	if len(received) != 7 {
		t.Fatalf("%d replicas received the recovery, want 7", len(received))
	}
	for _, ev := range received {
		if ev.At != recovered[0].At+int64(delay) {
			t.Errorf("replica %d received the recovery at %v, made at %v", ev.Replica, time.Duration(ev.At-epoch), time.Duration(recovered[0].At-epoch))
		}
	}
}

// A block that leaves the state before its end (another replica's
// recovery ended the ejection) ends its span there, not at the end it had.
func TestBlockSpanEndsWhenTheBlockGoes(t *testing.T) {
	var s series
	b := health.Block{Name: "openai/gpt-4o", Kind: health.Ejected, Until: int64(20 * time.Second)}
	s.blocks(int64(10*time.Second), []health.Block{b}, 0)
	s.blocks(int64(11*time.Second), []health.Block{b}, 0)
	s.blocks(int64(12*time.Second), nil, 0)
	s.blocks(int64(13*time.Second), nil, 0)
	if len(s.spans) != 1 || s.spans[0].From != int64(10*time.Second) || s.spans[0].To != int64(12*time.Second) {
		t.Fatalf("spans %+v, want one from 10 s to 12 s", s.spans)
	}
	// A block that runs to its end keeps it.
	var r series
	r.blocks(int64(10*time.Second), []health.Block{b}, 0)
	r.blocks(int64(21*time.Second), nil, 0)
	if len(r.spans) != 1 || r.spans[0].To != int64(20*time.Second) {
		t.Fatalf("spans %+v, want one to 20 s", r.spans)
	}
}
