package policy

import "time"

// Config is the whole configuration file (docs/configuration.md). It is plain data: what a
// user writes in YAML, with defaults filled in by Parse, Load or Finalize.
//
// A Config is not safe for concurrent mutation. After Finalize has returned
// without error it is treated as read-only by every package of this module,
// which may then share it between goroutines.
type Config struct {
	ModelProviders []ModelProvider `yaml:"model_providers"`
	Engine         *EngineConfig   `yaml:"engine,omitempty"`

	// compiled is the form the engine reads on every request: target
	// indices and expanded status code sets. Built by Finalize, which
	// runs once: a finalized Config keeps its compiled form and warnings.
	compiled *Compiled
	warnings []Warning
}

// ModelProvider is one entry of model_providers: a target and how to reach
// and retry it.
type ModelProvider struct {
	// Model is the target id, "provider/model". Required and unique.
	Model string `yaml:"model"`
	// BaseURL is where the HTTP adapter sends requests for this target.
	BaseURL string `yaml:"base_url,omitempty"`
	// AccessKey is the upstream credential. $NAME and ${NAME} are
	// expanded from the environment at load.
	AccessKey string `yaml:"access_key,omitempty"`
	// ProviderInterface says how credentials are sent: openai (default)
	// or anthropic.
	ProviderInterface string `yaml:"provider_interface,omitempty"`
	// PassthroughAuth forwards the client's own Authorization header
	// instead of AccessKey.
	PassthroughAuth bool `yaml:"passthrough_auth,omitempty"`
	// RetryPolicy governs requests whose primary is this target. Nil means
	// no retries: every outcome is returned as it is after one attempt.
	RetryPolicy *RetryPolicy `yaml:"retry_policy,omitempty"`
	// Timeouts overrides engine.timeouts for attempts sent to this target.
	// Keys left out inherit the engine's value.
	Timeouts *Timeouts `yaml:"timeouts,omitempty"`
	// PassiveHealth overrides engine.passive_health for this target. Keys
	// left out inherit the engine's value; enabled: false turns ejection
	// off for this target alone. Finalize leaves it as written: the merged
	// rule is in Compiled.Ejection.
	PassiveHealth *PassiveHealth `yaml:"passive_health,omitempty"`
	// Continuation says how this target can continue a streamed answer
	// that another attempt began and could not finish
	// (docs/gateway.md#continuing-a-cut-stream): none (the default), prefill,
	// prefix or continue_final_message.
	Continuation Continuation `yaml:"continuation,omitempty"`
}

// Continuation is the value of a provider entry's continuation: the
// dialect in which a target accepts the text already delivered as the
// start of its answer.
type Continuation string

// The continuation dialects.
const (
	// ContinueNone: the target cannot continue an answer (the default).
	ContinueNone Continuation = "none"
	// ContinuePrefill: a trailing assistant message is taken as the start
	// of the answer, with no marker.
	ContinuePrefill Continuation = "prefill"
	// ContinuePrefix: the trailing assistant message carries "prefix": true.
	ContinuePrefix Continuation = "prefix"
	// ContinueFinalMessage: the body carries "continue_final_message": true
	// and "add_generation_prompt": false beside the trailing assistant
	// message.
	ContinueFinalMessage Continuation = "continue_final_message"
)

// Strategy says where the next attempt goes after a failure.
type Strategy string

// The strategies of docs/behaviour.md#strategies.
const (
	SameModel         Strategy = "same_model"
	SameProvider      Strategy = "same_provider"
	DifferentProvider Strategy = "different_provider"
)

func (s Strategy) valid() bool {
	return s == SameModel || s == SameProvider || s == DifferentProvider
}

// RetryPolicy is the retry_policy block of a model provider (docs/behaviour.md#strategies). Its
// keys are those of the reference (plano) schema plus SameModelRetries.
type RetryPolicy struct {
	FallbackModels     []string            `yaml:"fallback_models,omitempty"`
	DefaultStrategy    Strategy            `yaml:"default_strategy,omitempty"`
	DefaultMaxAttempts *int                `yaml:"default_max_attempts,omitempty"`
	OnStatusCodes      []StatusRule        `yaml:"on_status_codes,omitempty"`
	OnTimeout          *TimeoutRule        `yaml:"on_timeout,omitempty"`
	OnHighLatency      *HighLatency        `yaml:"on_high_latency,omitempty"`
	Backoff            *Backoff            `yaml:"backoff,omitempty"`
	RetryAfterHandling *RetryAfterHandling `yaml:"retry_after_handling,omitempty"`
	MaxRetryDurationMs *int                `yaml:"max_retry_duration_ms,omitempty"`

	// SameModelRetries is reroute's extension for the most common policy
	// of LiteLLM and Portkey: "retry the same target N times with backoff,
	// then fall back". When a failure's strategy is same_provider or
	// different_provider, the target that just failed is first retried
	// until it has failed SameModelRetries+1 times in this request; only
	// then does the strategy pick another target. Each target of the
	// request gets the same allowance. Absent or 0 keeps the reference
	// meaning. Attempts remain bounded by max_attempts.
	SameModelRetries *int `yaml:"same_model_retries,omitempty"`

	// SameModelPatienceMs is how long a same-model retry (SameModelRetries)
	// waits out a Retry-After block of the target it retries instead of
	// failing over at once: a hint of at most this many milliseconds that
	// fits the deadline and the time budget is waited out. Absent:
	// DefaultSameModelPatienceMs. 0 fails over at once, whatever the hint.
	SameModelPatienceMs *int `yaml:"same_model_patience_ms,omitempty"`

	// UnlistedFailover is reroute's extension that says which targets
	// the random pick may choose once fallback_models are used up (see
	// docs/behaviour.md#failover-order): same_model (the default) only
	// another provider's target of the same model name (azure/gpt-4o for
	// openai/gpt-4o); any, every configured target the strategy allows
	// (the reference behaviour, which can answer a request for one model
	// with an unrelated one); none, only the listed fallbacks.
	UnlistedFailover UnlistedFailover `yaml:"unlisted_failover,omitempty"`

	// ContinueStreams lets a streamed answer that fails after its first
	// byte be continued by a target whose continuation is not none
	// (docs/gateway.md#continuing-a-cut-stream). Absent: true; it has an
	// effect only where some target can continue.
	ContinueStreams *bool `yaml:"continue_streams,omitempty"`

	// Hedge is reroute's extension against slow first tokens: when an
	// attempt has not produced its first token after a delay, a second
	// attempt starts beside it and the first to answer wins
	// (docs/behaviour.md#hedging). Nil: no hedging.
	Hedge *Hedge `yaml:"hedge,omitempty"`
}

// Hedge is retry_policy.hedge (docs/configuration.md#hedge). Exactly one of
// DelayMs and DelayPercentile says when a hedge starts; Finalize fills the
// other keys.
type Hedge struct {
	// DelayMs is a fixed delay, in milliseconds, from the start of an
	// attempt to its hedge.
	DelayMs *int `yaml:"delay_ms,omitempty"`
	// DelayPercentile takes the delay from the attempt's target: that
	// percentile of its recently observed times to first token, within
	// MinDelayMs and MaxDelayMs (MaxDelayMs until enough are observed).
	DelayPercentile *float64 `yaml:"delay_percentile,omitempty"`
	MinDelayMs      *int     `yaml:"min_delay_ms,omitempty"`
	MaxDelayMs      *int     `yaml:"max_delay_ms,omitempty"`
	// BudgetPercent bounds the hedges started over the last
	// HedgeBudgetWindow to this share of the requests of this policy begun
	// in it, plus BudgetMinPerSecond for each second of the window.
	BudgetPercent      *float64 `yaml:"budget_percent,omitempty"`
	BudgetMinPerSecond *float64 `yaml:"budget_min_per_second,omitempty"`
}

// UnlistedFailover is the value of unlisted_failover.
type UnlistedFailover string

// The values of unlisted_failover.
const (
	UnlistedSameModel UnlistedFailover = "same_model"
	UnlistedAny       UnlistedFailover = "any"
	UnlistedNone      UnlistedFailover = "none"
)

// StatusRule is one entry of on_status_codes. All three keys are required.
type StatusRule struct {
	Codes       []CodeSpec `yaml:"codes"`
	Strategy    Strategy   `yaml:"strategy"`
	MaxAttempts *int       `yaml:"max_attempts"`
	// SameModelRetries, reroute's extension, overrides the policy's
	// same_model_retries for failures this entry resolves. Optional.
	SameModelRetries *int `yaml:"same_model_retries,omitempty"`
}

// TimeoutRule is on_timeout: what to do after a timeout or transport error.
type TimeoutRule struct {
	Strategy    Strategy `yaml:"strategy"`
	MaxAttempts *int     `yaml:"max_attempts"`
	// SameModelRetries, reroute's extension, overrides the policy's
	// same_model_retries for timeouts and transport errors. Optional;
	// without it a timeout gets no same-target retry and a transport
	// error at most one (docs/behaviour.md#retrying-before-failing-over).
	SameModelRetries *int `yaml:"same_model_retries,omitempty"`
}

// Measure says which latency on_high_latency compares with its threshold.
type Measure string

// The measures of docs/configuration.md#on_high_latency.
const (
	MeasureTTFB  Measure = "ttfb"
	MeasureTotal Measure = "total"
)

// Scope says which identifier a block is keyed by: the target or its
// provider.
type Scope string

// The block scopes.
const (
	ScopeModel    Scope = "model"
	ScopeProvider Scope = "provider"
)

// ApplyTo says where a block lives: in the engine's shared health state, or
// only inside the request that observed it.
type ApplyTo string

// The apply_to values of blocks.
const (
	ApplyGlobal  ApplyTo = "global"
	ApplyRequest ApplyTo = "request"
)

// HighLatency is on_high_latency (docs/configuration.md#on_high_latency).
type HighLatency struct {
	ThresholdMs          *int     `yaml:"threshold_ms"`
	Measure              Measure  `yaml:"measure,omitempty"`
	MinTriggers          *int     `yaml:"min_triggers,omitempty"`
	TriggerWindowSeconds *int     `yaml:"trigger_window_seconds,omitempty"`
	Strategy             Strategy `yaml:"strategy"`
	MaxAttempts          *int     `yaml:"max_attempts"`
	BlockDurationSeconds *int     `yaml:"block_duration_seconds,omitempty"`
	Scope                Scope    `yaml:"scope,omitempty"`
	ApplyTo              ApplyTo  `yaml:"apply_to,omitempty"`
}

// BackoffApply is backoff.apply_to: which next targets the backoff delay is
// applied to (docs/behaviour.md#backoff-gate).
type BackoffApply string

// The backoff scope gates.
const (
	BackoffSameModel    BackoffApply = "same_model"
	BackoffSameProvider BackoffApply = "same_provider"
	BackoffGlobal       BackoffApply = "global"
)

// Backoff is the backoff block (docs/configuration.md#backoff).
type Backoff struct {
	ApplyTo BackoffApply `yaml:"apply_to"`
	BaseMs  *int         `yaml:"base_ms,omitempty"`
	MaxMs   *int         `yaml:"max_ms,omitempty"`
	Jitter  *Jitter      `yaml:"jitter,omitempty"`
}

// RetryAfterHandling tunes how Retry-After is honoured. It is always honoured;
// absent means {model, global, 300}.
type RetryAfterHandling struct {
	Scope                Scope   `yaml:"scope,omitempty"`
	ApplyTo              ApplyTo `yaml:"apply_to,omitempty"`
	MaxRetryAfterSeconds *int    `yaml:"max_retry_after_seconds,omitempty"`
}

// EngineConfig holds the engine-wide settings (docs/configuration.md#engine). They are reroute's
// own keys; the reference schema has none.
type EngineConfig struct {
	// MaxRetryingRequests bounds how many requests may be retrying at
	// once; past it a new request gets one attempt and no retries.
	// Default 1000; 0 means no bound.
	MaxRetryingRequests *int         `yaml:"max_retrying_requests,omitempty"`
	RetryBudget         *RetryBudget `yaml:"retry_budget,omitempty"`
	Timeouts            *Timeouts    `yaml:"timeouts,omitempty"`
	// PassiveHealth is the ejection of targets that keep failing, for
	// every target; Finalize fills every key. On by default.
	PassiveHealth *PassiveHealth `yaml:"passive_health,omitempty"`
	// SharedHealth shares the health facts with the other replicas of the
	// gateway through Redis (see SharedHealth). Off when absent.
	SharedHealth *SharedHealth `yaml:"shared_health,omitempty"`
}

// RetryBudget caps retries at Percent of recent requests plus MinPerSecond,
// over a sliding Window.
type RetryBudget struct {
	Enabled      *bool     `yaml:"enabled,omitempty"`
	Percent      *float64  `yaml:"percent,omitempty"`
	MinPerSecond *float64  `yaml:"min_per_second,omitempty"`
	Window       *Duration `yaml:"window,omitempty"`
}

// PassiveHealth is passive_health: ejecting a target that keeps failing
// (docs/configuration.md#passive_health). After ConsecutiveFailures failures
// in a row the target (or, with Scope provider, every target of its
// provider) is ejected for Cooldown, doubled with each consecutive ejection
// up to MaxCooldown; then one request probes it. In engine.passive_health
// Finalize fills every key; in a provider's a key left out (nil, or "" for
// Scope) inherits the engine's value.
type PassiveHealth struct {
	Enabled             *bool     `yaml:"enabled,omitempty"`
	ConsecutiveFailures *int      `yaml:"consecutive_failures,omitempty"`
	Cooldown            *Duration `yaml:"cooldown,omitempty"`
	MaxCooldown         *Duration `yaml:"max_cooldown,omitempty"`
	Scope               Scope     `yaml:"scope,omitempty"`
}

// Timeouts are per-attempt limits; 0 means none. In a provider's timeouts a
// key left out inherits the engine's value.
type Timeouts struct {
	Connect    *Duration `yaml:"connect,omitempty"`
	Headers    *Duration `yaml:"headers,omitempty"`
	FirstToken *Duration `yaml:"first_token,omitempty"`
	Idle       *Duration `yaml:"idle,omitempty"`
	Attempt    *Duration `yaml:"attempt,omitempty"`
}

// Duration is a time.Duration written in YAML as a Go duration string
// ("1.5s", "300ms") or a bare integer number of seconds.
type Duration time.Duration

// D returns d as a time.Duration; a nil d is 0.
func (d *Duration) D() time.Duration {
	if d == nil {
		return 0
	}
	return time.Duration(*d)
}
