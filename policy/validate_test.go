package policy

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestValidationErrors triggers each validation error of docs/configuration.md#errors with its
// own small configuration and checks the complete list of problems: field
// path, line and message.
func TestValidationErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want []want
	}{
		// Status codes.
		{"code out of range, one error per code", withPolicy(`
on_status_codes:
  - codes: [99, 429, 600, 1000]
    strategy: same_model
    max_attempts: 2`), []want{
			{rp + ".on_status_codes[0].codes[0]", 5, "status code 99 is outside 100-599"},
			{rp + ".on_status_codes[0].codes[2]", 5, "status code 600 is outside 100-599"},
			{rp + ".on_status_codes[0].codes[3]", 5, "status code 1000 is outside 100-599"},
		}},
		{"code negative", withPolicy(`
on_status_codes:
  - codes:
      - -429
    strategy: same_model
    max_attempts: 2`), []want{
			{rp + ".on_status_codes[0].codes[0]", 6, "status code -429 is outside 100-599"},
		}},
		{"range end out of range", withPolicy(`
on_status_codes:
  - codes: ["99-200", "500-600"]
    strategy: same_model
    max_attempts: 2`), []want{
			{rp + ".on_status_codes[0].codes[0]", 5, `range "99-200" is outside 100-599`},
			{rp + ".on_status_codes[0].codes[1]", 5, `range "500-600" is outside 100-599`},
		}},
		{"range inverted", withPolicy(`
on_status_codes:
  - codes: ["504-500"]
    strategy: same_model
    max_attempts: 2`), []want{
			{rp + ".on_status_codes[0].codes[0]", 5, `range "504-500" is inverted`},
		}},
		{"range malformed", withPolicy(`
on_status_codes:
  - codes: ["500-", "a-b", "500-504-510", "500..504", "5xx"]
    strategy: same_model
    max_attempts: 2`), []want{
			{rp + ".on_status_codes[0].codes[0]", 5, `range "500-" is malformed`},
			{rp + ".on_status_codes[0].codes[1]", 5, `range "a-b" is malformed`},
			{rp + ".on_status_codes[0].codes[2]", 5, `range "500-504-510" is malformed`},
			{rp + ".on_status_codes[0].codes[3]", 5, `range "500..504" is malformed`},
			{rp + ".on_status_codes[0].codes[4]", 5, `range "5xx" is malformed`},
		}},
		{"quoted single number", withPolicy(`
on_status_codes:
  - codes: ["429"]
    strategy: same_model
    max_attempts: 2`), []want{
			{rp + ".on_status_codes[0].codes[0]", 5, `range "429" is malformed: write a single code as an integer`},
		}},
		{"codes empty", withPolicy(`
on_status_codes:
  - codes: []
    strategy: same_model
    max_attempts: 2`), []want{
			{rp + ".on_status_codes[0].codes", 5, "codes is required"},
		}},
		{"status entry keys missing", withPolicy(`
on_status_codes:
  - strategy: same_model
  - codes: [503]`), []want{
			{rp + ".on_status_codes[0].codes", 0, "codes is required"},
			{rp + ".on_status_codes[0].max_attempts", 0, "max_attempts is required"},
			{rp + ".on_status_codes[1].strategy", 0, "strategy is required"},
			{rp + ".on_status_codes[1].max_attempts", 0, "max_attempts is required"},
		}},

		// Backoff.
		{"backoff without apply_to", withPolicy(`
default_strategy: same_model
backoff:
  base_ms: 100`), []want{
			{rp + ".backoff.apply_to", 5, "backoff requires apply_to"},
		}},
		{"backoff max_ms equal to base_ms", withPolicy(`
backoff:
  apply_to: global
  base_ms: 500
  max_ms: 500`), []want{
			{rp + ".backoff.max_ms", 7, "must be greater than base_ms (500), got 500"},
		}},
		{"backoff max_ms below base_ms", withPolicy(`
backoff:
  apply_to: global
  base_ms: 1000
  max_ms: 200`), []want{
			{rp + ".backoff.max_ms", 7, "must be greater than base_ms (1000), got 200"},
		}},
		{"backoff max_ms not above the default base_ms", withPolicy(`
backoff:
  apply_to: global
  max_ms: 100`), []want{
			{rp + ".backoff.max_ms", 6, "must be greater than base_ms (100), got 100"},
		}},
		{"backoff max_ms below the default of an explicit base", withPolicy(`
backoff:
  apply_to: global
  base_ms: 6000`), []want{
			{rp + ".backoff.max_ms", 4, "must be greater than base_ms (6000), got 5000"},
		}},

		// High latency.
		{"min_triggers above 1 without a window", withPolicy(`
on_high_latency:
  threshold_ms: 5000
  min_triggers: 3
  strategy: different_provider
  max_attempts: 2`), []want{
			{rp + ".on_high_latency.trigger_window_seconds", 4, "required when min_triggers is greater than 1"},
		}},
		{"trigger window zero", withPolicy(`
on_high_latency:
  threshold_ms: 5000
  trigger_window_seconds: 0
  strategy: different_provider
  max_attempts: 2`), []want{
			{rp + ".on_high_latency.trigger_window_seconds", 6, "must be greater than 0, got 0"},
		}},
		{"trigger window negative", withPolicy(`
on_high_latency:
  threshold_ms: 5000
  min_triggers: 2
  trigger_window_seconds: -30
  strategy: different_provider
  max_attempts: 2`), []want{
			{rp + ".on_high_latency.trigger_window_seconds", 7, "must be greater than 0, got -30"},
		}},
		{"min_triggers zero", withPolicy(`
on_high_latency:
  threshold_ms: 5000
  min_triggers: 0
  strategy: different_provider
  max_attempts: 2`), []want{
			{rp + ".on_high_latency.min_triggers", 6, "must be between 1 and 1000, got 0"},
		}},
		{"on_high_latency required keys", withPolicy(`
on_high_latency:
  measure: total`), []want{
			{rp + ".on_high_latency.threshold_ms", 4, "is required"},
			{rp + ".on_high_latency.strategy", 4, "strategy is required"},
			{rp + ".on_high_latency.max_attempts", 4, "is required"},
		}},
		{"on_timeout required keys", withPolicy(`
on_timeout: {}`), []want{
			{rp + ".on_timeout.strategy", 4, "strategy is required"},
			{rp + ".on_timeout.max_attempts", 4, "is required"},
		}},

		// Fallbacks.
		{"fallback empty or without slash", withPolicy(`
fallback_models:
  - ""
  - gpt-4o-mini`), []want{
			{rp + ".fallback_models[0]", 5, "must not be empty"},
			{rp + ".fallback_models[1]", 6, `fallback "gpt-4o-mini" must be a target id of the form provider/model`},
		}},

		// Unknown enum values.
		{"unknown default_strategy", withPolicy(`default_strategy: random`), []want{
			{rp + ".default_strategy", 4, `unknown strategy "random"`},
		}},
		{"unknown entry strategy", withPolicy(`
on_status_codes:
  - codes: [429]
    strategy: next
    max_attempts: 2`), []want{
			{rp + ".on_status_codes[0].strategy", 6, `unknown strategy "next"`},
		}},
		{"unknown on_timeout strategy", withPolicy(`
on_timeout:
  strategy: same-model
  max_attempts: 2`), []want{
			{rp + ".on_timeout.strategy", 5, `unknown strategy "same-model"`},
		}},
		{"unknown latency enums", withPolicy(`
on_high_latency:
  threshold_ms: 2000
  measure: p99
  strategy: elsewhere
  max_attempts: 2
  scope: region
  apply_to: everywhere`), []want{
			{rp + ".on_high_latency.measure", 6, `unknown measure "p99"`},
			{rp + ".on_high_latency.strategy", 7, `unknown strategy "elsewhere"`},
			{rp + ".on_high_latency.scope", 9, `unknown scope "region"`},
			{rp + ".on_high_latency.apply_to", 10, `unknown apply_to "everywhere"`},
		}},
		{"unknown backoff apply_to and jitter", withPolicy(`
backoff:
  apply_to: provider
  jitter: linear`), []want{
			{rp + ".backoff.apply_to", 5, `unknown apply_to "provider"`},
			{rp + ".backoff.jitter", 6, `unknown jitter "linear"`},
		}},
		{"jitter of another type", withPolicy(`
backoff:
  apply_to: global
  jitter: [full]`), []want{
			{rp + ".backoff.jitter", 6, "jitter must be true, false, none, equal, full or decorrelated"},
		}},
		{"unknown retry_after_handling enums", withPolicy(`
retry_after_handling:
  scope: global
  apply_to: process`), []want{
			{rp + ".retry_after_handling.scope", 5, `unknown scope "global"`},
			{rp + ".retry_after_handling.apply_to", 6, `unknown apply_to "process"`},
		}},
		{"unknown provider_interface", `model_providers:
  - model: google/gemini-2.5-flash
    provider_interface: gemini
`, []want{
			{"model_providers[0].provider_interface", 3, `unknown provider_interface "gemini"`},
		}},

		// Negative counts.
		{"negative default_max_attempts", withPolicy(`default_max_attempts: -1`), []want{
			{rp + ".default_max_attempts", 4, "must not be negative, got -1"},
		}},
		{"negative entry max_attempts", withPolicy(`
on_status_codes:
  - codes: [429]
    strategy: same_model
    max_attempts: -2`), []want{
			{rp + ".on_status_codes[0].max_attempts", 7, "must not be negative, got -2"},
		}},
		{"negative same_model_retries", withPolicy(`same_model_retries: -1`), []want{
			{rp + ".same_model_retries", 4, "must not be negative, got -1"},
		}},
		{"negative max_retrying_requests", `model_providers:
  - model: openai/gpt-4o
engine:
  max_retrying_requests: -1
`, []want{
			{"engine.max_retrying_requests", 4, "must not be negative, got -1"},
		}},

		// Engine block.
		{"retry budget out of range", `model_providers:
  - model: openai/gpt-4o
engine:
  retry_budget:
    percent: 101
    min_per_second: -1
    window: 500ms
`, []want{
			{"engine.retry_budget.percent", 5, "must be between 0 and 100, got 101"},
			{"engine.retry_budget.min_per_second", 6, "got -1"},
			{"engine.retry_budget.window", 7, "must be between 1s and 1h0m0s (the budget keeps a counter per second of it), got 500ms"},
		}},
		{"retry budget not a number", `model_providers:
  - model: openai/gpt-4o
engine:
  retry_budget:
    percent: .nan
    min_per_second: .inf
`, []want{
			{"engine.retry_budget.percent", 5, "got NaN"},
			{"engine.retry_budget.min_per_second", 6, "got +Inf"},
		}},
		{"negative timeouts", `model_providers:
  - model: openai/gpt-4o
    timeouts:
      headers: -1s
engine:
  timeouts:
    connect: -5
    idle: -1ms
`, []want{
			{"model_providers[0].timeouts.headers", 4, "must not be negative, got -1s"},
			{"engine.timeouts.connect", 7, "must not be negative, got -5s"},
			{"engine.timeouts.idle", 8, "must not be negative, got -1ms"},
		}},
		{"malformed durations", `model_providers:
  - model: openai/gpt-4o
    timeouts:
      attempt: 1.5
engine:
  retry_budget:
    window: ten seconds
  timeouts:
    first_token: "30"
`, []want{
			{"model_providers[0].timeouts.attempt", 4, `invalid duration "1.5"`},
			{"engine.retry_budget.window", 7, `invalid duration "ten seconds"`},
			{"engine.timeouts.first_token", 9, `invalid duration "30"`},
		}},

		// Passive health: each key on its own, in the engine block and a
		// provider's (checked even where enabled is false)…
		{"passive_health out of range", `model_providers:
  - model: openai/gpt-4o
engine:
  passive_health:
    consecutive_failures: 0
    cooldown: 0
    max_cooldown: 61m
    scope: target
`, []want{
			{"engine.passive_health.consecutive_failures", 5, "must be between 1 and 1000, got 0"},
			{"engine.passive_health.cooldown", 6, "must be greater than 0, got 0s"},
			{"engine.passive_health.max_cooldown", 7, "must be at most 1h0m0s (one hour), got 1h1m0s"},
			{"engine.passive_health.scope", 8, `unknown scope "target": use model or provider`},
		}},
		{"passive_health negative", `model_providers:
  - model: openai/gpt-4o
    passive_health:
      enabled: false
      consecutive_failures: 1001
      cooldown: -1s
      max_cooldown: -5
engine:
  passive_health:
    max_cooldown: -1ms
`, []want{
			{"model_providers[0].passive_health.consecutive_failures", 5, "must be between 1 and 1000, got 1001"},
			{"model_providers[0].passive_health.cooldown", 6, "must be greater than 0, got -1s"},
			{"model_providers[0].passive_health.max_cooldown", 7, "must be greater than 0, got -5s"},
			{"engine.passive_health.max_cooldown", 10, "must be greater than 0, got -1ms"},
		}},
		{"provider passive_health out of range", `model_providers:
  - model: openai/gpt-4o
    passive_health: {consecutive_failures: -3, cooldown: 2h, max_cooldown: 3601, scope: region}
`, []want{
			{"model_providers[0].passive_health.consecutive_failures", 3, "must be between 1 and 1000, got -3"},
			{"model_providers[0].passive_health.cooldown", 3, "must be at most 1h0m0s (one hour), got 2h0m0s"},
			{"model_providers[0].passive_health.max_cooldown", 3, "must be at most 1h0m0s (one hour), got 1h0m1s"},
			{"model_providers[0].passive_health.scope", 3, `unknown scope "region": use model or provider`},
		}},
		{"passive_health malformed", `model_providers:
  - model: openai/gpt-4o
    passive_health:
      cooldown: five seconds
      cooldwn: 5s
engine:
  passive_health:
    enabled: maybe
    max_cooldown: 1.5
`, []want{
			{"model_providers[0].passive_health.cooldown", 4, `invalid duration "five seconds"`},
			{"model_providers[0].passive_health.cooldwn", 5, `unknown key "cooldwn" (did you mean "cooldown"?)`},
			{"engine.passive_health.enabled", 8, "cannot unmarshal !!str `maybe` into bool"},
			{"engine.passive_health.max_cooldown", 9, `invalid duration "1.5"`},
		}},
		// …and max_cooldown against cooldown, after a provider's keys are
		// laid over the engine's: at max_cooldown where the block sets
		// it, else at cooldown, naming where the other value came from.
		{"engine max_cooldown below cooldown", `model_providers:
  - model: openai/gpt-4o
engine:
  passive_health:
    cooldown: 10s
    max_cooldown: 5s
`, []want{
			{"engine.passive_health.max_cooldown", 6, "must be at least cooldown (10s), got 5s"},
		}},
		{"engine cooldown above the default max_cooldown", `model_providers:
  - model: openai/gpt-4o
  - model: openai/gpt-4o-mini
  - model: anthropic/claude-3-5-sonnet
    passive_health: {enabled: false}
engine:
  passive_health:
    cooldown: 1m
`, []want{
			// Once, at the engine: the entries inherit the pair.
			{"engine.passive_health.cooldown", 8, "must be at most max_cooldown (30s, the default), got 1m0s"},
		}},
		{"engine max_cooldown below the default cooldown", `model_providers:
  - model: openai/gpt-4o
engine:
  passive_health:
    max_cooldown: 2s
`, []want{
			{"engine.passive_health.max_cooldown", 5, "must be at least cooldown (5s, the default), got 2s"},
		}},
		{"provider cooldown above the inherited max_cooldown", `model_providers:
  - model: openai/gpt-4o
    passive_health:
      cooldown: 1m
  - model: openai/gpt-4o-mini
    passive_health:
      cooldown: 50s
engine:
  passive_health:
    max_cooldown: 45s
`, []want{
			{"model_providers[0].passive_health.cooldown", 4, "must be at most max_cooldown (45s, from engine.passive_health.max_cooldown), got 1m0s"},
			{"model_providers[1].passive_health.cooldown", 7, "must be at most max_cooldown (45s, from engine.passive_health.max_cooldown), got 50s"},
		}},
		{"provider cooldown above the default max_cooldown", `model_providers:
  - model: openai/gpt-4o
    passive_health: {cooldown: 31s}
`, []want{
			{"model_providers[0].passive_health.cooldown", 3, "must be at most max_cooldown (30s, the default), got 31s"},
		}},
		{"provider max_cooldown below the inherited cooldown", `model_providers:
  - model: openai/gpt-4o
    passive_health:
      max_cooldown: 10s
  - model: openai/gpt-4o-mini
    passive_health:
      max_cooldown: 3s
engine:
  passive_health:
    cooldown: 20s
    max_cooldown: 1m
`, []want{
			{"model_providers[0].passive_health.max_cooldown", 4, "must be at least cooldown (20s, from engine.passive_health.cooldown), got 10s"},
			{"model_providers[1].passive_health.max_cooldown", 7, "must be at least cooldown (20s, from engine.passive_health.cooldown), got 3s"},
		}},
		{"provider max_cooldown below the default cooldown", `model_providers:
  - model: openai/gpt-4o
    passive_health: {max_cooldown: 3s}
`, []want{
			{"model_providers[0].passive_health.max_cooldown", 3, "must be at least cooldown (5s, the default), got 3s"},
		}},
		{"provider max_cooldown below its own cooldown", `model_providers:
  - model: openai/gpt-4o
    passive_health:
      enabled: false
      cooldown: 20s
      max_cooldown: 10s
`, []want{
			{"model_providers[0].passive_health.max_cooldown", 6, "must be at least cooldown (20s), got 10s"},
		}},

		// Providers.
		{"duplicated model", `model_providers:
  - model: openai/gpt-4o
  - model: anthropic/claude-3-5-sonnet
  - model: openai/gpt-4o
`, []want{
			{"model_providers[2].model", 4, `model "openai/gpt-4o" is already configured at model_providers[0]`},
		}},
		{"model missing", `model_providers:
  - base_url: https://api.openai.com/v1
`, []want{
			{"model_providers[0].model", 2, "model is required"},
		}},
		{"no providers", "model_providers: []\n", []want{
			{"model_providers", 1, "at least one provider is required"},
		}},
		{"model_providers key absent", "engine:\n  max_retrying_requests: 10\n", []want{
			{"model_providers", 0, "at least one provider is required"},
		}},

		// Types.
		{"wrong scalar type", withPolicy(`default_max_attempts: two`), []want{
			{rp + ".default_max_attempts", 4, "cannot unmarshal"},
		}},
		{"wrong type inside a flow mapping names the field", withPolicy(`
on_status_codes:
  - {codes: [429], strategy: same_model, max_attempts: x}`), []want{
			{rp + ".on_status_codes[0].max_attempts", 5, "cannot unmarshal !!str `x` into int"},
		}},
		{"bad code type inside a flow list names the item", withPolicy(`
on_status_codes:
  - codes: [429, [500]]
    strategy: same_model
    max_attempts: 2`), []want{
			{rp + ".on_status_codes[0].codes[1]", 5, "a status code must be an integer"},
		}},
		{"non-integer code", withPolicy(`
on_status_codes:
  - codes:
      - 0x1AD
    strategy: same_model
    max_attempts: 2`), []want{
			{rp + ".on_status_codes[0].codes[0]", 6, `status code "0x1AD" is not an integer`},
		}},
		{"mapping expected", withPolicy(`backoff: [same_model]`), []want{
			{rp + ".backoff", 4, "expected a mapping, found a list"},
		}},
		{"list expected", withPolicy(`fallback_models: anthropic/claude-3-5-sonnet`), []want{
			{rp + ".fallback_models", 4, `expected a list, found the value "anthropic/claude-3-5-sonnet"`},
		}},
		{"fraction where a whole number is required", withPolicy(`
default_max_attempts: 2.5
backoff:
  apply_to: global
  base_ms: 0.5`), []want{
			{rp + ".default_max_attempts", 4, "2.5 is not a whole number"},
			{rp + ".backoff.base_ms", 7, "0.5 is not a whole number"},
		}},
		{"duplicated key", `model_providers:
  - model: openai/gpt-4o
    model: openai/gpt-4o-mini
`, []want{
			{"model_providers[0].model", 3, `mapping key "model" already defined at line 2`},
		}},
		{"type error and validation error together", withPolicy(`
default_max_attempts: two
max_retry_duration_ms: 0`), []want{
			{rp + ".default_max_attempts", 4, "cannot unmarshal"},
			{rp + ".max_retry_duration_ms", 5, "must be greater than 0"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, "errors", parseError(t, tt.src), tt.want)
		})
	}
}

// TestValidationNonPositive covers each value docs/configuration.md#errors requires to be
// greater than 0, with 0 and with a negative value.
func TestValidationNonPositive(t *testing.T) {
	fields := []struct {
		path string
		line int
		body string // %d is the value
	}{
		{".backoff.base_ms", 6, "backoff:\n  apply_to: global\n  base_ms: %d\n  max_ms: 1000"},
		{".max_retry_duration_ms", 4, "max_retry_duration_ms: %d"},
		{".on_timeout.max_attempts", 6, "on_timeout:\n  strategy: different_provider\n  max_attempts: %d"},
		{".retry_after_handling.max_retry_after_seconds", 5, "retry_after_handling:\n  max_retry_after_seconds: %d"},
		{".on_high_latency.threshold_ms", 5, "on_high_latency:\n  threshold_ms: %d\n  strategy: different_provider\n  max_attempts: 2"},
		{".on_high_latency.max_attempts", 7, "on_high_latency:\n  threshold_ms: 2000\n  strategy: different_provider\n  max_attempts: %d"},
		{".on_high_latency.block_duration_seconds", 8, "on_high_latency:\n  threshold_ms: 2000\n  strategy: different_provider\n  max_attempts: 2\n  block_duration_seconds: %d"},
	}
	for _, f := range fields {
		for _, v := range []int{0, -1} {
			t.Run(fmt.Sprintf("%s=%d", f.path[1:], v), func(t *testing.T) {
				got := parseError(t, withPolicy(fmt.Sprintf(f.body, v)))
				checkProblems(t, "errors", got, []want{{rp + f.path, f.line, fmt.Sprintf("must be greater than 0, got %d", v)}})
			})
		}
	}
}

// TestUnknownKeyAnywhere puts one unknown key at every level of the file and
// expects each reported with its path and line, all in one error.
func TestUnknownKeyAnywhere(t *testing.T) {
	src := `model_providers:
  - model: openai/gpt-4o
    api_key: sk-x
    timeouts:
      connect: 5s
      read: 30s
    retry_policy:
      fallback_model: [anthropic/claude-3-5-sonnet]
      on_status_codes:
        - codes: [429]
          strategy: different_provider
          max_attempts: 2
          backoff: true
      on_timeout:
        strategy: different_provider
        max_attempts: 2
        timeout_ms: 100
      on_high_latency:
        threshold_ms: 3000
        strategy: different_provider
        max_attempts: 2
        window: 60
      backoff:
        apply_to: global
        factor: 2
      retry_after_handling:
        max_seconds: 60
  - model: anthropic/claude-3-5-sonnet
engine:
  retry_budget:
    ratio: 0.2
  timeouts:
    total: 60s
  max_retrying: 10
retry_policy: {}
`
	checkProblems(t, "errors", parseError(t, src), []want{
		{"model_providers[0].api_key", 3, `unknown key "api_key"`},
		{"model_providers[0].timeouts.read", 6, `unknown key "read"; known keys here: attempt, connect, first_token, headers, idle`},
		{rp + ".fallback_model", 8, `unknown key "fallback_model" (did you mean "fallback_models"?)`},
		{rp + ".on_status_codes[0].backoff", 13, `unknown key "backoff"`},
		{rp + ".on_timeout.timeout_ms", 17, `unknown key "timeout_ms"`},
		{rp + ".on_high_latency.window", 22, `unknown key "window"`},
		{rp + ".backoff.factor", 25, `unknown key "factor"`},
		{rp + ".retry_after_handling.max_seconds", 27, `unknown key "max_seconds"`},
		{"engine.retry_budget.ratio", 31, `unknown key "ratio"`},
		{"engine.timeouts.total", 33, `unknown key "total"`},
		{"engine.max_retrying", 34, `unknown key "max_retrying"`},
		{"retry_policy", 35, `unknown key "retry_policy"`},
	})
	// A misspelt top-level key: suggested, and the missing providers reported
	// as well.
	checkProblems(t, "errors", parseError(t, "model_provider:\n  - model: openai/gpt-4o\n"), []want{
		{"model_provider", 1, `(did you mean "model_providers"?)`},
		{"model_providers", 0, "at least one provider is required"},
	})
}

// TestParseDocumentShape covers what is wrong with the file as a whole.
func TestParseDocumentShape(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want want
	}{
		{"empty file", "", want{"model_providers", 0, "the configuration is empty"}},
		{"blank lines", "\n\n  \n", want{"model_providers", 0, "the configuration is empty"}},
		{"comments only", "# reroute\n# nothing yet\n", want{"model_providers", 0, "the configuration is empty"}},
		{"two documents", "model_providers:\n  - model: openai/gpt-4o\n---\nmodel_providers:\n  - model: openai/gpt-4o-mini\n", want{"", 3, "more than one YAML document"}},
		{"broken second document", "model_providers:\n  - model: openai/gpt-4o\n---\n[\n", want{"", 0, "YAML syntax"}},
		{"syntax error", "model_providers: [\n", want{"", 0, "YAML syntax"}},
		{"not a mapping", "- model: openai/gpt-4o\n", want{"", 1, "must be a mapping with a model_providers key"}},
		{"a scalar", "openai/gpt-4o\n", want{"", 1, "must be a mapping"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkProblems(t, "errors", parseError(t, tt.src), []want{tt.want})
		})
	}
	// A document end marker is not a second document.
	if _, _, err := Parse([]byte("model_providers:\n  - model: openai/gpt-4o\n...\n")); err != nil {
		t.Errorf("document end marker: %v", err)
	}
}

// TestErrorReportsEveryProblem checks that one error carries all the
// problems of a configuration, each with its model, and renders them one per
// line.
func TestErrorReportsEveryProblem(t *testing.T) {
	src := `model_providers:
  - model: openai/gpt-4o
    retry_policy:
      default_strategy: random
      on_status_codes:
        - codes: [700, "504-500"]
          strategy: same_model
          max_attempts: 2
      backoff:
        base_ms: 0
  - model: anthropic/claude-3-5-sonnet
    provider_interface: bedrock
    retry_policy:
      fallback_models: [gpt-4o]
      max_retry_duration_ms: 0
      unknown: 1
  - model: openai/gpt-4o
`
	got := parseError(t, src)
	ap := "model_providers[1].retry_policy"
	checkProblems(t, "errors", got, []want{
		{rp + ".default_strategy", 4, "unknown strategy"},
		{rp + ".on_status_codes[0].codes[0]", 6, "status code 700"},
		{rp + ".on_status_codes[0].codes[1]", 6, "inverted"},
		{rp + ".backoff.apply_to", 9, "requires apply_to"},
		{rp + ".backoff.base_ms", 10, "greater than 0"},
		{"model_providers[1].provider_interface", 12, "unknown provider_interface"},
		{ap + ".fallback_models[0]", 14, "provider/model"},
		{ap + ".max_retry_duration_ms", 15, "greater than 0"},
		{ap + ".unknown", 16, "unknown key"},
		{"model_providers[2].model", 17, "already configured"},
	})
	for _, p := range got {
		var wantModel string
		switch {
		case strings.HasPrefix(p.Path, "model_providers[0]"), strings.HasPrefix(p.Path, "model_providers[2]"):
			wantModel = "openai/gpt-4o"
		case strings.HasPrefix(p.Path, "model_providers[1]"):
			wantModel = "anthropic/claude-3-5-sonnet"
		}
		if p.Model != wantModel {
			t.Errorf("%s: model %q, want %q", p.Path, p.Model, wantModel)
		}
	}
	_, _, err := Parse([]byte(src))
	msg := err.Error()
	if !strings.HasPrefix(msg, "reroute: invalid configuration (10 problems):\n  ") || strings.Count(msg, "\n  ") != 10 {
		t.Errorf("error text:\n%s", msg)
	}
	if !strings.Contains(msg, "\n  line 15: model_providers[1].retry_policy.max_retry_duration_ms: (model anthropic/claude-3-5-sonnet) must be greater than 0, got 0") {
		t.Errorf("error text lacks a rendered problem:\n%s", msg)
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{Path: "a.b", Model: "x/y", Line: 3, Message: "m"}, "line 3: a.b: (model x/y) m"},
		{Problem{Path: "a.b", Model: "x/y", Message: "m"}, "a.b: (model x/y) m"},
		{Problem{Path: "engine.x", Line: 7, Message: "m"}, "line 7: engine.x: m"},
		{Problem{Path: "engine.x", Message: "m"}, "engine.x: m"},
		{Problem{Line: 4, Message: "m"}, "line 4: m"},
		{Problem{Message: "m"}, "m"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.p, got, tt.want)
		}
	}
	one := (&Error{Problems: []Problem{{Path: "p", Message: "m"}}}).Error()
	if one != "reroute: invalid configuration (1 problem):\n  p: m" {
		t.Errorf("single problem error = %q", one)
	}
}

// TestValidationWarnings triggers each warning of docs/configuration.md#errors, and checks that
// neighbouring configurations that should not warn do not.
func TestValidationWarnings(t *testing.T) {
	onlyPrimary := func(body string) string {
		return "model_providers:\n  - model: openai/gpt-4o\n    retry_policy:\n      " +
			strings.ReplaceAll(strings.TrimPrefix(body, "\n"), "\n", "\n      ") + "\n"
	}
	withSonnet := func(body string) string {
		return onlyPrimary(body) + "  - model: anthropic/claude-3-5-sonnet\n"
	}
	withMini := func(body string) string {
		return onlyPrimary(body) + "  - model: openai/gpt-4o-mini\n"
	}
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"single provider, default strategy needs another target", onlyPrimary(`{}`), []want{
			{rp + ".default_strategy", 3, "strategy different_provider needs another target"},
		}},
		{"single provider, same_model needs none", onlyPrimary(`default_strategy: same_model`), nil},
		{"same_provider without a target of the provider", withSonnet(`
on_status_codes:
  - codes: [429]
    strategy: same_provider
    max_attempts: 2`), []want{
			{rp + ".on_status_codes[0].strategy", 6, "strategy same_provider needs another target"},
		}},
		{"different_provider without a target of another provider", withMini(`
default_strategy: same_provider
on_timeout:
  strategy: different_provider
  max_attempts: 2
on_high_latency:
  threshold_ms: 5000
  strategy: different_provider
  max_attempts: 2`), []want{
			{rp + ".on_timeout.strategy", 6, "strategy different_provider needs another target"},
			{rp + ".on_high_latency.strategy", 10, "strategy different_provider needs another target"},
		}},
		{"fallback not configured", withPolicy(`fallback_models: [mistral/mistral-large, anthropic/claude-3-5-sonnet]`), []want{
			{rp + ".fallback_models[0]", 4, `fallback "mistral/mistral-large" is not a configured model`},
		}},
		{"status code listed twice, one warning per code", withPolicy(`
on_status_codes:
  - codes: [429, "500-502"]
    strategy: same_model
    max_attempts: 2
  - codes: [429, 503, "501-504"]
    strategy: different_provider
    max_attempts: 3
  - codes: [503, 503]
    strategy: same_provider
    max_attempts: 2`), []want{
			{rp + ".on_status_codes[1].codes[0]", 8, "status code 429 is already listed in " + rp + ".on_status_codes[0]"},
			{rp + ".on_status_codes[1].codes[2]", 8, "status code 501 is already listed in " + rp + ".on_status_codes[0]"},
			{rp + ".on_status_codes[1].codes[2]", 8, "status code 502 is already listed in " + rp + ".on_status_codes[0]"},
			{rp + ".on_status_codes[1].codes[2]", 8, "status code 503 is already listed at codes[1] of this entry"},
			{rp + ".on_status_codes[2].codes[0]", 11, "status code 503 is already listed in " + rp + ".on_status_codes[1]"},
			{rp + ".on_status_codes[2].codes[1]", 11, "status code 503 is already listed in " + rp + ".on_status_codes[1]"},
		}},
		{"backoff same_model with default different_provider", withPolicy(`
backoff:
  apply_to: same_model`), []want{
			{rp + ".backoff.apply_to", 5, "rarely applies"},
		}},
		{"backoff same_model with same_model_retries", withPolicy(`
same_model_retries: 2
backoff:
  apply_to: same_model`), nil},
		{"backoff same_model with same_model_retries 0", withPolicy(`
same_model_retries: 0
backoff:
  apply_to: same_model`), []want{
			{rp + ".backoff.apply_to", 6, "rarely applies"},
		}},
		{"backoff same_model with default same_model", withPolicy(`
default_strategy: same_model
backoff:
  apply_to: same_model`), nil},
		{"backoff same_provider with default same_model", withPolicy(`
default_strategy: same_model
backoff:
  apply_to: same_provider`), []want{
			{rp + ".backoff.apply_to", 6, "say apply_to: same_model"},
		}},
		{"backoff same_provider with default different_provider", withPolicy(`
backoff:
  apply_to: same_provider`), nil},
		{"retry_after provider scope with default same_model", withPolicy(`
default_strategy: same_model
retry_after_handling:
  scope: provider`), []want{
			{rp + ".retry_after_handling.scope", 6, "blocks the very target the retry needs"},
		}},
		{"retry_after provider scope with default different_provider", withPolicy(`
retry_after_handling:
  scope: provider`), nil},
		{"latency provider scope with strategy same_model", withPolicy(`
on_high_latency:
  threshold_ms: 5000
  strategy: same_model
  max_attempts: 2
  scope: provider`), []want{
			{rp + ".on_high_latency.scope", 8, "ends the request"},
		}},
		{"latency model scope with strategy same_model", withPolicy(`
on_high_latency:
  threshold_ms: 5000
  strategy: same_model
  max_attempts: 2`), nil},
		{"threshold under 1000 ms", withPolicy(`
on_high_latency:
  threshold_ms: 999
  strategy: different_provider
  max_attempts: 2`), []want{
			{rp + ".on_high_latency.threshold_ms", 5, "threshold 999 ms is under 1000 ms"},
		}},
		{"threshold of exactly 1000 ms", withPolicy(`
on_high_latency:
  threshold_ms: 1000
  strategy: different_provider
  max_attempts: 2`), nil},
		{"unset environment variable", `model_providers:
  - model: openai/gpt-4o
    access_key: ${REROUTE_TEST_UNSET}-$REROUTE_TEST_UNSET_TOO
`, []want{
			{"model_providers[0].access_key", 3, "environment variable REROUTE_TEST_UNSET is not set"},
			{"model_providers[0].access_key", 3, "environment variable REROUTE_TEST_UNSET_TOO is not set"},
		}},
	}
	unsetenv(t, "REROUTE_TEST_UNSET")
	unsetenv(t, "REROUTE_TEST_UNSET_TOO")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, warns := mustParse(t, tt.src)
			checkProblems(t, "warnings", warns, tt.want)
			for _, w := range warns {
				if w.Model != "openai/gpt-4o" {
					t.Errorf("warning %s: model %q", w.Path, w.Model)
				}
			}
		})
	}
}

// unsetenv removes an environment variable for the duration of the test.
func unsetenv(t *testing.T, name string) {
	t.Setenv(name, "") // restores the old value after the test
	if err := os.Unsetenv(name); err != nil {
		t.Fatal(err)
	}
}

// TestWarningsAlsoComeWithErrors: warnings are returned even when the
// configuration is rejected, so a caller can print both.
func TestWarningsAlsoComeWithErrors(t *testing.T) {
	_, warns, err := Parse([]byte(withPolicy("fallback_models: [mistral/mistral-large]\nmax_retry_duration_ms: 0")))
	if err == nil {
		t.Fatal("no error")
	}
	checkProblems(t, "warnings", warns, []want{{rp + ".fallback_models[0]", 4, "not a configured model"}})
}

func TestAccessKeyExpansion(t *testing.T) {
	t.Setenv("REROUTE_TEST_KEY", "sk-live-123")
	t.Setenv("REROUTE_TEST_EMPTY", "")
	tests := []struct {
		raw, want string
	}{
		{"$REROUTE_TEST_KEY", "sk-live-123"},
		{"${REROUTE_TEST_KEY}", "sk-live-123"},
		{"prefix-${REROUTE_TEST_KEY}-suffix", "prefix-sk-live-123-suffix"},
		{"$REROUTE_TEST_KEY/$REROUTE_TEST_KEY", "sk-live-123/sk-live-123"},
		{"sk-literal", "sk-literal"},
		{"$REROUTE_TEST_EMPTY", ""}, // set but empty: no warning
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			cfg, warns := mustParse(t, fmt.Sprintf("model_providers:\n  - model: openai/gpt-4o\n    access_key: %q\n", tt.raw))
			if got := cfg.ModelProviders[0].AccessKey; got != tt.want {
				t.Errorf("access_key = %q, want %q", got, tt.want)
			}
			if len(warns) != 0 {
				t.Errorf("warnings: %v", warns)
			}
		})
	}
	// Finalize on a Config built in Go expands too.
	cfg := &Config{ModelProviders: []ModelProvider{{Model: "openai/gpt-4o", AccessKey: "${REROUTE_TEST_KEY}"}}}
	if _, err := cfg.Finalize(); err != nil {
		t.Fatal(err)
	}
	if got := cfg.ModelProviders[0].AccessKey; got != "sk-live-123" {
		t.Errorf("Finalize: access_key = %q", got)
	}
}

func TestJitterForms(t *testing.T) {
	tests := []struct {
		yaml string
		want Jitter
	}{
		{"true", JitterEqual},
		{"True", JitterEqual},
		{"false", JitterNone},
		{"none", JitterNone},
		{"equal", JitterEqual},
		{"full", JitterFull},
		{"decorrelated", JitterDecorrelated},
		{`"full"`, JitterFull},
		{"null", JitterEqual}, // as if absent: the default
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			cfg, _ := mustParse(t, withPolicy("backoff:\n  apply_to: global\n  jitter: "+tt.yaml))
			if got := *cfg.ModelProviders[0].RetryPolicy.Backoff.Jitter; got != tt.want {
				t.Errorf("jitter %s = %q, want %q", tt.yaml, got, tt.want)
			}
			if got := cfg.Compiled().Rules[0].Backoff.Jitter; got != tt.want {
				t.Errorf("compiled jitter = %q, want %q", got, tt.want)
			}
		})
	}
	cfg, _ := mustParse(t, withPolicy("backoff:\n  apply_to: global"))
	if got := *cfg.ModelProviders[0].RetryPolicy.Backoff.Jitter; got != JitterEqual {
		t.Errorf("absent jitter = %q, want equal", got)
	}
	// Only true and false are booleans in YAML 1.2: yes, on and 1 are
	// unknown names, reported like any other.
	for _, bad := range []string{"yes", "on", "1", "Full"} {
		checkProblems(t, "errors", parseError(t, withPolicy("backoff:\n  apply_to: global\n  jitter: "+bad)),
			[]want{{rp + ".backoff.jitter", 6, "unknown jitter"}})
	}
}

func TestDurations(t *testing.T) {
	tests := []struct {
		yaml string
		want time.Duration
	}{
		{"1.5s", 1500 * time.Millisecond},
		{"300ms", 300 * time.Millisecond},
		{"2m30s", 150 * time.Second},
		{"30", 30 * time.Second},
		{"0", 0},
		{`"0"`, 0},
		{"0s", 0},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			src := "model_providers:\n  - model: openai/gpt-4o\n    timeouts:\n      idle: " + tt.yaml +
				"\nengine:\n  retry_budget:\n    window: 20s\n  timeouts:\n    connect: " + tt.yaml + "\n"
			cfg, _ := mustParse(t, src)
			if got := cfg.Engine.Timeouts.Connect.D(); got != tt.want {
				t.Errorf("engine connect = %v, want %v", got, tt.want)
			}
			if got := cfg.ModelProviders[0].Timeouts.Idle.D(); got != tt.want {
				t.Errorf("provider idle = %v, want %v", got, tt.want)
			}
			if got := cfg.Engine.RetryBudget.Window.D(); got != 20*time.Second {
				t.Errorf("window = %v", got)
			}
		})
	}
	var nilD *Duration
	if nilD.D() != 0 {
		t.Error("nil Duration is not 0")
	}
	// A duration in seconds too large for time.Duration is refused.
	checkProblems(t, "errors", parseError(t, "model_providers:\n  - model: openai/gpt-4o\nengine:\n  timeouts:\n    attempt: 9300000000\n"),
		[]want{{"engine.timeouts.attempt", 5, "not a number of seconds in range"}})
}

// TestEngineDefaults checks the engine block's defaults, and that a
// provider's timeouts keep only what it sets (the engine fills the rest at
// run time).
func TestEngineDefaults(t *testing.T) {
	cfg, warns := mustParse(t, "model_providers:\n  - model: openai/gpt-4o\n    timeouts:\n      headers: 10s\n")
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	tr := true
	want := EngineConfig{
		MaxRetryingRequests: ip(DefaultMaxRetryingRequests),
		RetryBudget: &RetryBudget{
			Enabled:      &tr,
			Percent:      fp(DefaultBudgetPercent),
			MinPerSecond: fp(DefaultBudgetMinPerSecond),
			Window:       dp(Duration(10 * time.Second)),
		},
		Timeouts: &Timeouts{
			Connect:    dp(Duration(5 * time.Second)),
			Headers:    dp(Duration(30 * time.Second)),
			FirstToken: dp(Duration(30 * time.Second)),
			Idle:       dp(Duration(30 * time.Second)),
			Attempt:    dp(0),
		},
		PassiveHealth: &PassiveHealth{
			Enabled:             &tr,
			ConsecutiveFailures: ip(5),
			Cooldown:            dp(Duration(5 * time.Second)),
			MaxCooldown:         dp(Duration(30 * time.Second)),
			Scope:               ScopeModel,
		},
	}
	if yamlOf(cfg.Engine) != yamlOf(want) {
		t.Errorf("engine:\n%s\nwant:\n%s", yamlOf(cfg.Engine), yamlOf(want))
	}
	pt := cfg.ModelProviders[0].Timeouts
	if pt.Headers.D() != 10*time.Second || pt.Connect != nil || pt.FirstToken != nil || pt.Idle != nil || pt.Attempt != nil {
		t.Errorf("provider timeouts = %s", yamlOf(pt))
	}
	if cfg.ModelProviders[0].RetryPolicy != nil {
		t.Error("retry_policy filled in although absent: absent means no retries")
	}
	if cfg.Compiled().Rules[0] != nil {
		t.Error("compiled rules for a provider without retry_policy")
	}

	cfg, _ = mustParse(t, "model_providers:\n  - model: openai/gpt-4o\nengine:\n  max_retrying_requests: 0\n  retry_budget: {enabled: false, percent: 0, min_per_second: 0}\n")
	if *cfg.Engine.MaxRetryingRequests != 0 || *cfg.Engine.RetryBudget.Enabled || *cfg.Engine.RetryBudget.Percent != 0 {
		t.Errorf("explicit zeros overwritten: %s", yamlOf(cfg.Engine))
	}
}

func fp(v float64) *float64 { return &v }

// TestFinalizeInGo checks the contract of Finalize for a Config built in
// Go: it fills defaults and compiles, it is idempotent, and on error
// Compiled is nil.
func TestFinalizeInGo(t *testing.T) {
	cfg := &Config{ModelProviders: []ModelProvider{
		{Model: "openai/gpt-4o", RetryPolicy: &RetryPolicy{OnStatusCodes: []StatusRule{rule(SameModel, 3, code(429))}}},
		{Model: "anthropic/claude-3-5-sonnet"},
	}}
	for i := range 2 {
		warns, err := cfg.Finalize()
		if err != nil || len(warns) != 0 {
			t.Fatalf("Finalize #%d: %v %v", i+1, warns, err)
		}
		r := cfg.Compiled().Rules[0]
		if r.Default != (Action{DifferentProvider, 2}) || r.RetryAfter.Max != 300*time.Second {
			t.Errorf("Finalize #%d: rules %+v", i+1, r)
		}
	}

	bad := &Config{ModelProviders: []ModelProvider{{Model: "openai/gpt-4o", RetryPolicy: &RetryPolicy{MaxRetryDurationMs: ip(-5)}}}}
	_, err := bad.Finalize()
	var perr *Error
	if !errors.As(err, &perr) || bad.Compiled() != nil {
		t.Fatalf("Finalize: err %v, compiled %v", err, bad.Compiled())
	}
	// Without YAML there are no lines.
	checkProblems(t, "errors", perr.Problems, []want{{rp + ".max_retry_duration_ms", 0, "greater than 0"}})
	if perr.Problems[0].Line != 0 {
		t.Errorf("line %d for a Config built in Go", perr.Problems[0].Line)
	}
	// Finalize runs once: a finalized configuration is read-only, and a
	// second Finalize changes nothing and returns the same compiled form.
	before := cfg.Compiled()
	if _, err := cfg.Finalize(); err != nil || cfg.Compiled() != before {
		t.Errorf("second Finalize: err %v, compiled form replaced %v", err, cfg.Compiled() != before)
	}
}

// An access_key is expanded once: a key whose value contains "$" after
// expansion (or was written with an escaped "$") survives a second
// Finalize, as engine.New used to run it.
func TestFinalizeExpandsOnce(t *testing.T) {
	t.Setenv("REROUTE_TEST_KEY", "sk-abc$def")
	cfg := &Config{ModelProviders: []ModelProvider{{Model: "openai/gpt-4o", AccessKey: "$REROUTE_TEST_KEY"}}}
	for i := range 3 {
		if _, err := cfg.Finalize(); err != nil {
			t.Fatal(err)
		}
		if got := cfg.ModelProviders[0].AccessKey; got != "sk-abc$def" {
			t.Fatalf("after Finalize #%d the key is %q, want %q", i+1, got, "sk-abc$def")
		}
	}
}

// TestValidationUpperBounds: every setting that becomes a duration, and
// min_triggers, has an upper bound; the bound itself is accepted and
// compiles to the duration written, one more is refused with its path and
// value. Values used to be accepted and to wrap around when multiplied by
// their unit (max_retry_after_seconds: 18446744074 became 290 ms).
func TestValidationUpperBounds(t *testing.T) {
	lat := "on_high_latency:\n  threshold_ms: %d\n  strategy: different_provider\n  max_attempts: 2"
	fields := []struct {
		path string
		line int
		body string // %d is the value
		max  int
		msg  string // the message for max+1, with %d for the value
		got  func(r *Rules) time.Duration
	}{
		{".retry_after_handling.max_retry_after_seconds", 5, "retry_after_handling:\n  max_retry_after_seconds: %d",
			MaxSeconds, "must be at most 86400 seconds (one day), got %d", func(r *Rules) time.Duration { return r.RetryAfter.Max }},
		{".on_high_latency.block_duration_seconds", 8, "on_high_latency:\n  threshold_ms: 2000\n  strategy: different_provider\n  max_attempts: 2\n  block_duration_seconds: %d",
			MaxSeconds, "must be at most 86400 seconds (one day), got %d", func(r *Rules) time.Duration { return r.Latency.Block }},
		{".on_high_latency.trigger_window_seconds", 8, "on_high_latency:\n  threshold_ms: 2000\n  strategy: different_provider\n  max_attempts: 2\n  trigger_window_seconds: %d",
			MaxSeconds, "must be at most 86400 seconds (one day), got %d", func(r *Rules) time.Duration { return r.Latency.Window }},
		{".on_high_latency.threshold_ms", 5, lat,
			MaxMilliseconds, "must be at most 86400000 ms (one day), got %d", func(r *Rules) time.Duration { return r.Latency.Threshold }},
		{".max_retry_duration_ms", 4, "max_retry_duration_ms: %d",
			MaxMilliseconds, "must be at most 86400000 ms (one day), got %d", func(r *Rules) time.Duration { return r.MaxRetryDuration }},
		{".backoff.max_ms", 6, "backoff:\n  apply_to: global\n  max_ms: %d",
			MaxMilliseconds, "must be at most 86400000 ms (one day), got %d", func(r *Rules) time.Duration { return r.Backoff.Max }},
		{".backoff.base_ms", 6, "backoff:\n  apply_to: global\n  base_ms: %d\n  max_ms: 86400000",
			MaxMilliseconds - 1, "must be at most 86400000 ms (one day), got %d", func(r *Rules) time.Duration { return r.Backoff.Base }},
	}
	for _, f := range fields {
		t.Run(f.path[1:], func(t *testing.T) {
			cfg, _ := mustParse(t, withPolicy(fmt.Sprintf(f.body, f.max)))
			unit := time.Second
			if strings.HasSuffix(f.path, "_ms") {
				unit = time.Millisecond
			}
			if got, want := f.got(cfg.Compiled().Rules[0]), time.Duration(f.max)*unit; got != want {
				t.Errorf("%d compiles to %v, want %v", f.max, got, want)
			}
			for _, v := range []int{MaxMilliseconds + 1, 18446744074, math.MaxInt64} {
				if v <= f.max {
					continue
				}
				got := parseError(t, withPolicy(fmt.Sprintf(f.body, v)))
				wants := []want{{rp + f.path, f.line, fmt.Sprintf(f.msg, v)}}
				if f.path == ".backoff.base_ms" {
					wants = append(wants, want{rp + ".backoff.max_ms", 7, "must be greater than base_ms"})
				}
				checkProblems(t, "errors", got, wants)
			}
		})
	}
	checkProblems(t, "errors", parseError(t, withPolicy(fmt.Sprintf(lat, 1)+"\n  min_triggers: 1001\n  trigger_window_seconds: 60")),
		[]want{{rp + ".on_high_latency.min_triggers", 8, "must be between 1 and 1000, got 1001"}})
	cfg, _ := mustParse(t, withPolicy(fmt.Sprintf(lat, 2000)+"\n  min_triggers: 1000\n  trigger_window_seconds: 60"))
	if got := cfg.Compiled().Rules[0].Latency.MinTriggers; got != MaxMinTriggers {
		t.Errorf("min_triggers %d", got)
	}
}

// TestTimeoutUpperBounds: timeouts are at most a day, the retry budget's
// window at most an hour.
func TestTimeoutUpperBounds(t *testing.T) {
	src := `model_providers:
  - model: openai/gpt-4o
    timeouts:
      attempt: 24h
      idle: 24h0m0.001s
engine:
  retry_budget:
    window: 3601
  timeouts:
    connect: 86401
    headers: 2562047h
`
	checkProblems(t, "errors", parseError(t, src), []want{
		{"model_providers[0].timeouts.idle", 5, "must be at most 24h0m0s (one day), got 24h0m0.001s"},
		{"engine.retry_budget.window", 8, "must be between 1s and 1h0m0s (the budget keeps a counter per second of it), got 1h0m1s"},
		{"engine.timeouts.connect", 10, "must be at most 24h0m0s (one day), got 24h0m1s"},
		{"engine.timeouts.headers", 11, "must be at most 24h0m0s (one day), got 2562047h0m0s"},
	})
	cfg, _ := mustParse(t, "model_providers:\n  - model: openai/gpt-4o\nengine:\n  retry_budget:\n    window: 1h\n  timeouts:\n    attempt: 86400\n")
	if cfg.Engine.RetryBudget.Window.D() != time.Hour || cfg.Compiled().Limits[0].Attempt != 24*time.Hour {
		t.Errorf("window %v, attempt %v", cfg.Engine.RetryBudget.Window.D(), cfg.Compiled().Limits[0].Attempt)
	}
}

// TestWarnFallbackIsPrimary: a fallback equal to the entry's own model is
// never used; it is a warning, and the other fallbacks are kept.
func TestWarnFallbackIsPrimary(t *testing.T) {
	cfg, warns := mustParse(t, withPolicy("fallback_models: [openai/gpt-4o, anthropic/claude-3-5-sonnet]"))
	checkProblems(t, "warnings", warns, []want{
		{rp + ".fallback_models[0]", 4, `fallback "openai/gpt-4o" is this entry's own model`},
	})
	if fb := cfg.Compiled().Rules[0].Fallbacks; len(fb) != 2 || fb[1] != 2 {
		t.Errorf("fallbacks %v", fb)
	}
}

// TestWarnCodeTwiceInOneEntry: a code listed twice in one on_status_codes
// entry, as a code or inside a range, is one warning per repeating spec.
func TestWarnCodeTwiceInOneEntry(t *testing.T) {
	oc := rp + ".on_status_codes[0]"
	tests := []struct {
		codes string
		want  []want
	}{
		{`[429, 429]`, []want{{oc + ".codes[1]", 5, "status code 429 is already listed at codes[0] of this entry"}}},
		{`[500, "500-504"]`, []want{{oc + ".codes[1]", 5, "status code 500 is already listed at codes[0] of this entry"}}},
		{`["500-504", 502, "501-507"]`, []want{
			{oc + ".codes[1]", 5, "status code 502 is already listed at codes[0] of this entry"},
			{oc + ".codes[2]", 5, "status codes 501-504 are already listed at codes[0] of this entry"},
		}},
		{`[429, "500-502", 503, "502-503", 504]`, []want{
			{oc + ".codes[3]", 5, "status codes 502-503 are already listed at codes[1] of this entry"},
		}},
		{`[429, 500, "501-504"]`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.codes, func(t *testing.T) {
			_, warns := mustParse(t, withPolicy("on_status_codes:\n  - codes: "+tt.codes+"\n    strategy: same_model\n    max_attempts: 2"))
			checkProblems(t, "warnings", warns, tt.want)
		})
	}
	if got := codeList([]int{500, 501, 502, 507, 509, 510}); got != "status codes 500-502, 507, 509-510 are" {
		t.Errorf("codeList = %q", got)
	}
}

// TestPassiveHealthDefaults: a configuration that says nothing ejects every
// target with the defaults, with or without a retry_policy, and Finalize
// fills engine.passive_health so that it marshals like the other defaults.
func TestPassiveHealthDefaults(t *testing.T) {
	cfg, warns := mustParse(t, withPolicy(`default_strategy: same_model`))
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	want := EjectionRule{Consecutive: DefaultConsecutiveFailures, Cooldown: DefaultCooldown, MaxCooldown: DefaultMaxCooldown, Scope: ScopeModel}
	c := cfg.Compiled()
	if len(c.Ejection) != 3 {
		t.Fatalf("%d rules for 3 targets", len(c.Ejection))
	}
	for i, r := range c.Ejection {
		if r == nil || *r != want {
			t.Errorf("Ejection[%d] = %+v, want %+v", i, r, want)
		}
	}
	if c.Rules[1] != nil || c.Ejection[1] == nil {
		t.Error("a target without a retry_policy has no ejection rule")
	}
	if c.Ejection[0] == c.Ejection[1] {
		t.Error("targets share one rule")
	}
	for i, mp := range cfg.ModelProviders {
		if mp.PassiveHealth != nil {
			t.Errorf("model_providers[%d].passive_health filled in: %s", i, yamlOf(mp.PassiveHealth))
		}
	}
	if got, want := yamlOf(cfg.Engine.PassiveHealth), "enabled: true\nconsecutive_failures: 5\ncooldown: 5s\nmax_cooldown: 30s\nscope: model\n"; got != want {
		t.Errorf("engine.passive_health:\n%s\nwant:\n%s", got, want)
	}
	roundTrip(t, cfg)
}

// TestPassiveHealthMerge: a provider's passive_health is laid over the
// engine's key by key. The provider block stays as written; the merged rule
// is in Compiled.Ejection, nil where it is disabled.
func TestPassiveHealthMerge(t *testing.T) {
	cfg, warns := mustParse(t, `model_providers:
  - model: openai/gpt-4o
  - model: openai/gpt-4o-mini
    passive_health: {consecutive_failures: 2}
  - model: anthropic/claude-3-5-sonnet
    passive_health: {enabled: false}
  - model: anthropic/claude-3-haiku
    passive_health: {cooldown: 1s, max_cooldown: 10, scope: model}
  - model: mistral/mistral-large
    passive_health: {enabled: true, cooldown: 1m}
engine:
  passive_health:
    consecutive_failures: 3
    cooldown: 2
    max_cooldown: 1m
    scope: provider
`)
	if len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	want := []*EjectionRule{
		{Consecutive: 3, Cooldown: 2 * time.Second, MaxCooldown: time.Minute, Scope: ScopeProvider},
		{Consecutive: 2, Cooldown: 2 * time.Second, MaxCooldown: time.Minute, Scope: ScopeProvider},
		nil,
		{Consecutive: 3, Cooldown: time.Second, MaxCooldown: 10 * time.Second, Scope: ScopeModel},
		{Consecutive: 3, Cooldown: time.Minute, MaxCooldown: time.Minute, Scope: ScopeProvider},
	}
	checkEjection(t, cfg.Compiled(), want)
	if ph := cfg.ModelProviders[1].PassiveHealth; ph.Enabled != nil || ph.Cooldown != nil || ph.MaxCooldown != nil || ph.Scope != "" {
		t.Errorf("provider passive_health filled in: %s", yamlOf(ph))
	}
	roundTrip(t, cfg)

	// Off in the engine, on for one target: that target gets the
	// engine's values.
	cfg, _ = mustParse(t, `model_providers:
  - model: openai/gpt-4o
  - model: anthropic/claude-3-5-sonnet
    passive_health: {enabled: true}
engine:
  passive_health: {enabled: false, consecutive_failures: 7}
`)
	checkEjection(t, cfg.Compiled(), []*EjectionRule{
		nil,
		{Consecutive: 7, Cooldown: DefaultCooldown, MaxCooldown: DefaultMaxCooldown, Scope: ScopeModel},
	})
	roundTrip(t, cfg)

	// A Config built in Go merges the same way.
	off := false
	gocfg := &Config{ModelProviders: []ModelProvider{
		{Model: "openai/gpt-4o", PassiveHealth: &PassiveHealth{Enabled: &off}},
		{Model: "anthropic/claude-3-5-sonnet", PassiveHealth: &PassiveHealth{ConsecutiveFailures: ip(1), Scope: ScopeProvider}},
	}}
	if _, err := gocfg.Finalize(); err != nil {
		t.Fatal(err)
	}
	checkEjection(t, gocfg.Compiled(), []*EjectionRule{
		nil,
		{Consecutive: 1, Cooldown: DefaultCooldown, MaxCooldown: DefaultMaxCooldown, Scope: ScopeProvider},
	})
}

func checkEjection(t *testing.T, c *Compiled, want []*EjectionRule) {
	t.Helper()
	if len(c.Ejection) != len(want) {
		t.Fatalf("%d rules, want %d", len(c.Ejection), len(want))
	}
	for i, w := range want {
		switch got := c.Ejection[i]; {
		case w == nil && got != nil:
			t.Errorf("Ejection[%d] (%s) = %+v, want nil", i, c.Targets[i], *got)
		case w != nil && (got == nil || *got != *w):
			t.Errorf("Ejection[%d] (%s) = %+v, want %+v", i, c.Targets[i], got, *w)
		}
	}
}

// TestPassiveHealthBounds: the bounds themselves are accepted and compile
// to the values written.
func TestPassiveHealthBounds(t *testing.T) {
	cfg, _ := mustParse(t, `model_providers:
  - model: openai/gpt-4o
    passive_health: {consecutive_failures: 1, cooldown: 1ns, max_cooldown: 1ns}
engine:
  passive_health: {consecutive_failures: 1000, cooldown: 3600, max_cooldown: 1h}
`)
	checkEjection(t, cfg.Compiled(), []*EjectionRule{{Consecutive: 1, Cooldown: 1, MaxCooldown: 1, Scope: ScopeModel}})
	if MaxConsecutiveFailures != 1000 || MaxEjectionCooldown != time.Hour {
		t.Errorf("bounds %d, %v", MaxConsecutiveFailures, MaxEjectionCooldown)
	}
	cfg, _ = mustParse(t, "model_providers:\n  - model: openai/gpt-4o\nengine:\n  passive_health: {consecutive_failures: 1000, cooldown: 1h, max_cooldown: 3600}\n")
	checkEjection(t, cfg.Compiled(), []*EjectionRule{{Consecutive: 1000, Cooldown: time.Hour, MaxCooldown: time.Hour, Scope: ScopeModel}})
}

// TestPassiveHealthWarnings: a max_cooldown over 2m in effect for some
// target warns once, at the key that set it.
func TestPassiveHealthWarnings(t *testing.T) {
	const long = "a recovered target stays ejected for up to "
	tests := []struct {
		name string
		src  string
		want []want
	}{
		{"engine max_cooldown over 2m", `model_providers:
  - model: openai/gpt-4o
  - model: anthropic/claude-3-5-sonnet
engine:
  passive_health:
    max_cooldown: 5m
`, []want{
			{"engine.passive_health.max_cooldown", 6, long + "5m0s before a request probes it; keep max_cooldown at 2m0s or less so that recovery is prompt"},
		}},
		{"provider max_cooldown over 2m", `model_providers:
  - model: openai/gpt-4o
  - model: anthropic/claude-3-5-sonnet
    passive_health:
      cooldown: 10s
      max_cooldown: 1h
`, []want{
			{"model_providers[1].passive_health.max_cooldown", 6, long + "1h0m0s"},
		}},
		{"exactly 2m", `model_providers:
  - model: openai/gpt-4o
engine:
  passive_health: {max_cooldown: 2m}
`, nil},
		{"engine off", `model_providers:
  - model: openai/gpt-4o
    passive_health: {enabled: false, max_cooldown: 10m}
engine:
  passive_health: {enabled: false, max_cooldown: 10m}
`, nil},
		{"engine off, on for two targets", `model_providers:
  - model: openai/gpt-4o
    passive_health: {enabled: true}
  - model: openai/gpt-4o-mini
  - model: anthropic/claude-3-5-sonnet
    passive_health: {enabled: true}
engine:
  passive_health: {enabled: false, max_cooldown: 10m}
`, []want{
			{"engine.passive_health.max_cooldown", 8, long + "10m0s"},
		}},
		{"every target overrides it", `model_providers:
  - model: openai/gpt-4o
    passive_health: {max_cooldown: 1m}
engine:
  passive_health: {max_cooldown: 10m}
`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, warns := mustParse(t, tt.src)
			checkProblems(t, "warnings", warns, tt.want)
			roundTrip(t, cfg)
			for _, w := range warns {
				want := "" // a warning about the engine block names no model
				if strings.HasPrefix(w.Path, "model_providers[1]") {
					want = "anthropic/claude-3-5-sonnet"
				}
				if w.Model != want {
					t.Errorf("warning %s: model %q, want %q", w.Path, w.Model, want)
				}
			}
		})
	}
	// Over its bound, max_cooldown is an error and not also a warning.
	_, warns, err := Parse([]byte("model_providers:\n  - model: openai/gpt-4o\n    passive_health: {max_cooldown: 3601s}\n"))
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("err %v, want problems", err)
	}
	checkProblems(t, "errors", perr.Problems, []want{{"model_providers[0].passive_health.max_cooldown", 3, "must be at most 1h0m0s (one hour), got 1h0m1s"}})
	checkProblems(t, "warnings", warns, nil)
}

// unlisted_failover: its values, and the policies that may fail over to
// targets they do not list.
func TestUnlistedFailover(t *testing.T) {
	doc := func(mode string) string {
		return `
model_providers:
  - model: openai/gpt-4o
    retry_policy:
      fallback_models: [anthropic/claude-3-5-sonnet]
      default_strategy: different_provider` + mode + `
  - model: anthropic/claude-3-5-sonnet
  - model: azure/gpt-4o
  - model: mistral/mistral-embed
`
	}
	for _, tt := range []struct {
		mode    string
		want    []string
		wantKey UnlistedFailover
	}{
		{"", []string{"azure/gpt-4o", "mistral/mistral-embed"}, UnlistedAny},
		{"\n      unlisted_failover: any", []string{"azure/gpt-4o", "mistral/mistral-embed"}, UnlistedAny},
		{"\n      unlisted_failover: same_model", []string{"azure/gpt-4o"}, UnlistedSameModel},
		{"\n      unlisted_failover: none", nil, ""},
	} {
		cfg, _, err := Parse([]byte(doc(tt.mode)))
		if err != nil {
			t.Fatalf("%q: %v", tt.mode, err)
		}
		got := UnlistedFailovers(cfg)
		if tt.want == nil {
			if len(got) != 0 {
				t.Errorf("%q: %+v, want none", tt.mode, got)
			}
			continue
		}
		if len(got) != 1 || got[0].Model != "openai/gpt-4o" || got[0].Path != "model_providers[0].retry_policy" || got[0].Mode != tt.wantKey || !slices.Equal(got[0].Targets, tt.want) {
			t.Errorf("%q: %+v, want %v", tt.mode, got, tt.want)
		}
	}
	_, _, err := Parse([]byte(doc("\n      unlisted_failover: everything")))
	var perr *Error
	if !errors.As(err, &perr) || !strings.Contains(err.Error(), `model_providers[0].retry_policy.unlisted_failover`) || !strings.Contains(err.Error(), `"everything"`) {
		t.Fatalf("bad value: %v", err)
	}
	// With none and no fallback that matches, the strategy has nowhere to go.
	_, warns, err := Parse([]byte("model_providers:\n  - model: openai/gpt-4o\n    retry_policy: {default_strategy: different_provider, unlisted_failover: none}\n  - model: anthropic/claude-3-5-sonnet\n"))
	if err != nil || len(warns) != 1 || warns[0].Path != "model_providers[0].retry_policy.default_strategy" {
		t.Fatalf("none without fallbacks: %v %v", warns, err)
	}
}

func TestContinuationValues(t *testing.T) {
	cfg, _, err := Parse([]byte(`
model_providers:
  - model: a/m
    continuation: prefix
    retry_policy:
      continue_streams: false
  - model: b/m
`))
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Compiled()
	if c.Continuation[0] != ContinuePrefix || c.Continuation[1] != ContinueNone {
		t.Errorf("continuation = %v, want [prefix none]", c.Continuation)
	}
	if c.Rules[0].ContinueStreams {
		t.Error("continue_streams: false compiled as true")
	}
	_, _, err = Parse([]byte("model_providers:\n  - model: a/m\n    continuation: prefil\n"))
	if err == nil || !strings.Contains(err.Error(), "model_providers[0].continuation") || !strings.Contains(err.Error(), `"prefil"`) {
		t.Errorf("bad continuation: err = %v, want one naming model_providers[0].continuation and the value", err)
	}
}
