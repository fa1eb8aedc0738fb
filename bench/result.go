package bench

import (
	"encoding/json"
	"io"
	"math"
	"time"
)

// Result is what a run measured. Its JSON form (WriteJSON) is the -json
// output of cmd/loadgen; in sim mode everything but Wall is a function of
// the scenario, the seed and the request count alone. The result of a
// reroute run carries the baselines run beside it (Run) in Baselines; a
// baseline's result carries none.
type Result struct {
	Scenario string `json:"scenario"`
	Mode     string `json:"mode"`   // "sim" or "http"
	Policy   string `json:"policy"` // "reroute", or the baseline's name: "naive", "naive-failover"
	Seed     uint64 `json:"seed"`

	Requests      int64   `json:"requests"`
	Succeeded     int64   `json:"succeeded"` // a 2xx answer delivered
	Failed        int64   `json:"failed"`
	SuccessRate   float64 `json:"success_rate"`
	Attempts      int64   `json:"attempts"`
	Amplification float64 `json:"amplification"` // attempts per request
	// Hedges counts the hedges started (docs/behaviour.md#hedging); their
	// attempts are in Attempts too.
	Hedges int64 `json:"hedges"`

	AttemptsByTarget map[string]int64 `json:"attempts_by_target"`
	ServedByTarget   map[string]int64 `json:"served_by_target"`
	// FailuresByReason counts failed requests by the engine's exhaustion
	// reason (max_attempts_reached, budget_exhausted, providers_exhausted,
	// deadline, retrying_requests_limit), or upstream_<status> for a
	// non-2xx answer delivered as it is, upstream_timeout and
	// upstream_error for a timeout or transport error delivered as it is
	// (a target without retry_policy).
	FailuresByReason map[string]int64 `json:"failures_by_reason"`

	LatencyMs          Percentiles `json:"latency_ms"` // of the requests that succeeded, from arrival to the end of the answer
	ScenarioDurationMs float64     `json:"scenario_duration_ms"`
	// Blocks are the stretches of scenario time during which the shared
	// health state held a block (sampled; empty for a baseline, which
	// keeps none).
	Blocks []BlockJSON `json:"blocks"`

	// Replicas is the number of engines of a reroute run with more than
	// one (Options.Replicas), 0 otherwise; ShareDelayMs their sharing
	// delay, nil when they did not share.
	Replicas     int      `json:"replicas,omitempty"`
	ShareDelayMs *float64 `json:"share_delay_ms,omitempty"`

	Wall      Wall      `json:"wall"`
	Baselines []*Result `json:"baselines,omitempty"` // in the order they were asked for

	series   *series
	scenario *Scenario
}

// Percentiles are latency quantiles in milliseconds, exact to within 1 %
// (a log-linear histogram; Max is exact).
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// BlockJSON is a stretch of scenario time during which the shared health
// state held a block on ID (a target id or a provider name) of Kind
// ("retry_after" or "latency").
type BlockJSON struct {
	ID     string  `json:"id"`
	Kind   string  `json:"kind"`
	FromMs float64 `json:"from_ms"`
	ToMs   float64 `json:"to_ms"`
}

// Wall is what the run cost in real time; the only part of a sim-mode
// result that varies between runs.
type Wall struct {
	DurationMs        float64 `json:"duration_ms"`
	RequestsPerSecond float64 `json:"requests_per_second"`
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

func ms(ns int64) float64 { return round(float64(ns)/1e6, 3) }

// result turns what r recorded into a Result.
func (r *recorder) result(sc *Scenario, mode, pol string, seed uint64, wall time.Duration) *Result {
	res := &Result{
		Scenario:         sc.Name,
		Mode:             mode,
		Policy:           pol,
		Seed:             seed,
		Requests:         r.requests,
		Succeeded:        r.succeeded,
		Failed:           r.failed,
		Attempts:         r.nattempts,
		Hedges:           r.hedges,
		AttemptsByTarget: map[string]int64{},
		ServedByTarget:   map[string]int64{},
		FailuresByReason: map[string]int64{},
		LatencyMs: Percentiles{
			P50: r.quantileMs(0.50),
			P90: r.quantileMs(0.90),
			P99: r.quantileMs(0.99),
			Max: ms(r.lat.max),
		},
		ScenarioDurationMs: ms(r.lastEnd),
		Blocks:             []BlockJSON{},
		series:             &r.ser,
		scenario:           sc,
	}
	if r.requests > 0 {
		res.SuccessRate = round(float64(r.succeeded)/float64(r.requests), 6)
		res.Amplification = round(float64(r.nattempts)/float64(r.requests), 4)
	}
	for i, t := range r.targets {
		res.AttemptsByTarget[t] = r.attempts[i]
		res.ServedByTarget[t] = r.served[i]
	}
	for k, v := range r.reasons {
		res.FailuresByReason[k] = v
	}
	for _, s := range r.ser.sortedSpans() {
		res.Blocks = append(res.Blocks, BlockJSON{ID: s.Name, Kind: s.Kind.String(), FromMs: ms(s.From), ToMs: ms(s.To)})
	}
	res.Wall.DurationMs = round(float64(wall)/1e6, 3)
	if wall > 0 {
		res.Wall.RequestsPerSecond = round(float64(r.requests)/wall.Seconds(), 1)
	}
	return res
}

// quantileMs is a latency quantile in milliseconds, to 0.1 ms (the
// histogram is no more precise), never above the exact maximum.
func (r *recorder) quantileMs(q float64) float64 {
	return min(round(ms(r.lat.quantile(q)), 1), ms(r.lat.max))
}

// WriteJSON writes r as indented JSON. Map keys come out sorted, so two
// equal results give equal bytes.
//
// Besides "baselines", the object has "baseline": the first of them again,
// as the only baseline was written before there were several, so that
// readers of that key keep working. It is written here rather than kept
// as a field so that the Go value has one place for its baselines.
func (r *Result) WriteJSON(w io.Writer) error {
	v := struct {
		*Result
		Baseline *Result `json:"baseline,omitempty"`
	}{Result: r}
	if len(r.Baselines) > 0 {
		v.Baseline = r.Baselines[0]
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
