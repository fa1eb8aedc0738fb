package health_test

import (
	"context"
	"fmt"
	"time"

	"github.com/reroute-go/reroute/health"
	"github.com/reroute-go/reroute/policy"
)

func Example() {
	cfg, _, err := policy.Parse([]byte(`
model_providers:
  - model: openai/gpt-4o
  - model: openai/gpt-4o-mini
  - model: anthropic/claude-3-5-sonnet
`))
	if err != nil {
		panic(err)
	}
	c := cfg.Compiled()
	h := health.New(c)
	defer h.Stop()

	gpt4o, _ := c.Lookup("openai/gpt-4o")
	mini, _ := c.Lookup("openai/gpt-4o-mini")
	claude, _ := c.Lookup("anthropic/claude-3-5-sonnet")
	now := time.Now().UnixNano()

	// gpt-4o answered 429 with Retry-After: 30, provider scope.
	h.ReportRetryAfter(c.ID(gpt4o, policy.ScopeProvider), now+int64(30*time.Second))

	// Only tests and shutdown paths wait; requests read whatever is published.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Sync(ctx); err != nil {
		panic(err)
	}

	snap := h.Snapshot()
	for _, t := range []int{gpt4o, mini, claude} {
		st := snap.Lookup(t, now)
		fmt.Printf("%s clear=%v blocked=%v kind=%v for=%v\n", c.Targets[t], snap.Clear(t), st.Blocked(now), st.Kind,
			time.Duration(max(st.Until-now, 0)))
	}
	// Output:
	// openai/gpt-4o clear=false blocked=true kind=retry_after for=30s
	// openai/gpt-4o-mini clear=false blocked=true kind=retry_after for=30s
	// anthropic/claude-3-5-sonnet clear=true blocked=false kind=retry_after for=0s
}
