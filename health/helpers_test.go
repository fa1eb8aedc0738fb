package health

import (
	"testing"

	"github.com/reroute-go/reroute/policy"
)

// testConfig has four targets on three providers. Target ids:
// 0 openai/gpt-4o, 1 openai/gpt-4o-mini, 2 anthropic/claude-3-5-sonnet,
// 3 mistral/mistral-large; provider ids: 4 openai, 5 anthropic, 6 mistral.
// The largest min_triggers is 3 and the longest window 60s.
const testConfig = `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      on_high_latency: {threshold_ms: 1000, min_triggers: 3, trigger_window_seconds: 10, strategy: different_provider, max_attempts: 2, block_duration_seconds: 60}
  - model: openai/gpt-4o-mini
  - model: anthropic/claude-3-5-sonnet
    retry_policy:
      on_high_latency: {threshold_ms: 1000, min_triggers: 2, trigger_window_seconds: 60, strategy: same_provider, max_attempts: 2, scope: provider}
  - model: mistral/mistral-large
`

// Identifiers of testConfig.
const (
	tGPT4o = iota
	tMini
	tClaude
	tMistral
	pOpenAI
	pAnthropic
	pMistral
	numTestIDs
)

func compiled(tb testing.TB, doc string) *policy.Compiled {
	tb.Helper()
	cfg, _, err := policy.Parse([]byte(doc))
	if err != nil {
		tb.Fatal(err)
	}
	return cfg.Compiled()
}

func testCompiled(tb testing.TB) *policy.Compiled { return compiled(tb, testConfig) }
