package engine

import (
	"testing"
	"time"

	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

// The simulator drives a Machine in virtual time, which may start at 0:
// the time budget must still start at the first failure.
func TestMachineVirtualTimeBudgetFromZero(t *testing.T) {
	cfg := mustConfig(t, `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      default_strategy: same_model
      default_max_attempts: 10
      max_retry_duration_ms: 1000
`)
	e, err := New(cfg, WithHealth(SyncHealth(health.NewState(cfg.Compiled()))), WithSeed(1))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var m Machine
	m.SetNow(0)
	if err := e.Begin(&m, gpt); err != nil {
		t.Fatal(err)
	}
	defer m.Finish()
	st := m.Start()
	for now := int64(0); st.Kind == StepAttempt; now += int64(600 * time.Millisecond) {
		m.SetNow(now)
		st = m.Observe(&policy.Outcome{Status: 503})
	}
	if st.Kind != StepFail || st.Err.Reason != ReasonBudget || !st.Err.BudgetExhausted {
		t.Fatalf("step = %+v, want exhaustion of the time budget", st)
	}
	if n := len(st.Err.Attempts); n != 3 {
		t.Errorf("attempts = %d, want 3 (failures at 0, 0.6 s and 1.2 s; the budget ends at 1 s)", n)
	}
}
