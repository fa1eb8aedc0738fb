package engine

import (
	"sync"
	"time"

	"github.com/reroute-go/reroute/policy"
)

// retryBudget is engine.retry_budget: the retries granted within the
// sliding window may be at most percent of the requests begun within it,
// plus minPerSecond × window. It is consulted only when a request is about
// to retry; the success path only counts the requests it begins, in its
// shard (see shard.begun).
//
// Retries are counted exactly, in one-second buckets. Requests are known
// only as a running total, so the budget needs the total as it stood when
// the window began. It keeps a mark (time, total) for every second in
// which it was consulted, plus one at New. The window's start usually falls
// between two marks, and the total there is interpolated linearly between
// them: exact while retries happen every second (a retry storm, the case
// the budget exists for), and after a quiet spell an estimate that assumes
// the requests since the last mark arrived evenly. A design that counted
// only the requests after the first retry of a window (the budget's
// buckets alone) under-counted exactly when an outage began: 100 successes
// followed by 10 failures granted 4 of the 10 retries a 50 % budget allows.
// A design that counted requests per second on the success path would cost
// every request a clock read.
//
// retryBudget is safe for concurrent use; its zero value (and that of a
// disabled budget) grants every retry.
type retryBudget struct {
	enabled bool
	percent float64
	floor   float64 // minPerSecond × window seconds
	seconds int64
	window  int64 // seconds × 1e9

	mu      sync.Mutex
	retries []budgetBucket // ring indexed by second
	marks   []budgetMark   // ring indexed by second, one longer than the window
	origin  budgetMark     // at New: no request before it
}

type budgetBucket struct {
	sec     int64
	retries int64
}

type budgetMark struct {
	sec      int64
	at       int64 // unix ns
	requests int64 // requests begun at that time
	set      bool  // the mark has been written
}

// newRetryBudget returns the budget b configures, whose window starts at
// now (unix ns). A nil or disabled b grants everything.
func newRetryBudget(b *policy.RetryBudget, now int64) *retryBudget {
	if b == nil || b.Enabled == nil || !*b.Enabled {
		return &retryBudget{}
	}
	secs := max(int64(b.Window.D()/time.Second), 1)
	return &retryBudget{
		enabled: true,
		percent: *b.Percent / 100,
		floor:   *b.MinPerSecond * float64(secs),
		seconds: secs,
		window:  secs * int64(time.Second),
		retries: make([]budgetBucket, secs),
		marks:   make([]budgetMark, secs+1),
		origin:  budgetMark{at: now, set: true},
	}
}

// allow grants one retry at now (unix ns), when requests requests have been
// begun so far, or refuses it.
func (b *retryBudget) allow(now, requests int64) bool {
	if !b.enabled {
		return true
	}
	sec := now / int64(time.Second)
	b.mu.Lock()
	defer b.mu.Unlock()
	if mk := &b.marks[sec%int64(len(b.marks))]; !mk.set || mk.sec != sec {
		*mk = budgetMark{sec: sec, at: now, requests: requests, set: true}
	}
	cur := &b.retries[sec%b.seconds]
	if cur.sec != sec {
		*cur = budgetBucket{sec: sec}
	}
	var retries int64
	for i := range b.retries {
		if bk := &b.retries[i]; bk.sec > sec-b.seconds && bk.sec <= sec {
			retries += bk.retries
		}
	}
	inWindow := requests - b.requestsAt(now-b.window, now, requests)
	if float64(retries+1) > b.percent*float64(inWindow)+b.floor {
		return false
	}
	cur.retries++
	return true
}

// requestsAt estimates the running total of requests at time t (before
// now): interpolated between the latest mark at or before t and the
// earliest one after it (or now itself).
func (b *retryBudget) requestsAt(t, now, requests int64) int64 {
	if b.origin.at > t {
		return b.origin.requests // every request since New is in the window
	}
	lo, hi := b.origin, budgetMark{at: now, requests: requests}
	for _, mk := range b.marks {
		if !mk.set || mk.at > now {
			continue
		}
		if mk.at <= t && mk.at > lo.at {
			lo = mk
		}
		if mk.at > t && mk.at < hi.at {
			hi = mk
		}
	}
	if hi.at <= lo.at {
		return hi.requests
	}
	return lo.requests + int64(float64(hi.requests-lo.requests)*float64(t-lo.at)/float64(hi.at-lo.at))
}
