package engine

import (
	"testing"
	"time"

	"github.com/reroute-go/reroute/policy"
)

func budgetOf(percent, minPerSecond float64, window time.Duration, now int64) *retryBudget {
	on := true
	d := policy.Duration(window)
	return newRetryBudget(&policy.RetryBudget{Enabled: &on, Percent: &percent, MinPerSecond: &minPerSecond, Window: &d}, now)
}

// The requests before a window's first retry count: 100 successes, then
// 10 failing requests at percent 50 without a floor grant all 10 retries.
func TestRetryBudgetCountsRequestsBeforeTheFirstRetry(t *testing.T) {
	b := budgetOf(50, 0, 10*time.Second, 0)
	granted := 0
	for i := range 10 {
		if b.allow(int64(time.Second)+int64(i)*int64(time.Millisecond), 110) {
			granted++
		}
	}
	if granted != 10 {
		t.Fatalf("granted %d of 10 retries, want 10 (50%% of 110 requests)", granted)
	}
}

// The budget still bounds a storm: at 50 % of 110 requests, the 56th
// retry in the window is refused.
func TestRetryBudgetRefusesBeyondItsShare(t *testing.T) {
	b := budgetOf(50, 0, 10*time.Second, 0)
	granted := 0
	for range 100 {
		if b.allow(int64(time.Second), 110) {
			granted++
		}
	}
	if granted != 55 {
		t.Fatalf("granted %d retries, want 55", granted)
	}
}

// After a quiet spell the total at the window's start is interpolated
// between the marks around it, as if the requests between them had arrived
// evenly: 1,000 requests by 1 s, then 10 more by 61 s. The window (51 s,
// 61 s] is estimated to hold 10 × 10/60 ≈ 2 of them, so a 50 % budget
// without a floor grants 1 retry; the old requests do not count.
func TestRetryBudgetInterpolatesAfterAQuietSpell(t *testing.T) {
	b := budgetOf(50, 0, 10*time.Second, 0)
	if !b.allow(int64(time.Second), 1000) { // a mark at 1 s: 1,000 requests
		t.Fatal("first retry refused")
	}
	granted := 0
	for range 20 {
		if b.allow(int64(61*time.Second), 1010) {
			granted++
		}
	}
	if granted != 1 {
		t.Fatalf("granted %d retries after the quiet spell, want 1", granted)
	}
}

// A disabled budget grants everything and costs nothing.
func TestRetryBudgetDisabled(t *testing.T) {
	b := newRetryBudget(nil, 0)
	for range 1000 {
		if !b.allow(0, 0) {
			t.Fatal("a disabled budget refused a retry")
		}
	}
}
