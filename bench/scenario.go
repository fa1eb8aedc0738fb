package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/reroute-go/reroute/internal/yamlkeys"
	"github.com/reroute-go/reroute/policy"
)

// Scenario is a parsed and validated scenario file: a reroute
// configuration, the load that arrives, and what each upstream target does
// over scenario time. Make one with ParseScenario or LoadScenario. It is
// immutable after parsing and safe to run any number of times, also
// concurrently; every run builds its own engine from its own copy of the
// configuration (NewConfig).
type Scenario struct {
	Name        string
	Description string
	Seed        uint64
	Workload    Workload
	// Upstreams holds the behaviour of every configured target, indexed
	// like Targets (the configuration's model_providers order). A target
	// the file does not mention answers 200 with DefaultLatency.
	Upstreams []Upstream
	// Targets are the configured target ids, in configuration order.
	Targets []string
	// Warnings are the configuration's warnings (policy.Warning), with
	// paths under "config.".
	Warnings []Problem

	// cfg is the configuration, finalized once by ParseScenario; runs
	// take copies of it (NewConfig) and never modify it.
	cfg  *policy.Config
	file string
}

// Workload is the load of a scenario: how many requests, how they arrive,
// and what each asks for.
type Workload struct {
	Model       string        // the primary target every request names
	Requests    int           // how many requests in all
	Concurrency int           // closed loop: requests kept in flight; 0 in open loop
	Rate        float64       // open loop: Poisson arrivals per second; 0 in closed loop
	Timeout     time.Duration // each request's deadline, from its arrival
	Stream      bool          // streamed answers: committed at the first byte
}

// Upstream is what one target does over scenario time.
type Upstream struct {
	Target  string
	Latency Latency // the healthy latency, also of attempts a phase misses
	Phases  []Phase // ordered by At; before the first, the target is healthy
	// Capacity is how many attempts the upstream serves at once; an
	// attempt that arrives while Capacity are in progress is answered 503
	// after OverloadDelay, whatever the phase says. 0: no limit. It is
	// what makes load matter: retries that pile onto a struggling
	// upstream push it over.
	Capacity int
}

// OverloadDelay is how long an upstream over its capacity takes to answer
// 503: a load balancer shedding the attempt.
const OverloadDelay = 20 * time.Millisecond

// Latency is a latency model: each answer's TTFB and Total are the given
// values multiplied by one log-normal factor with mean 1 and standard
// deviation of its logarithm Spread (0: exact).
type Latency struct {
	TTFB   time.Duration
	Total  time.Duration
	Spread float64
}

// Phase is a behaviour of a target from At (scenario time) until the next
// phase's At. A share of the attempts that start in it (Share) get the
// phase's behaviour; the others get a healthy 200 with the upstream's
// latency.
type Phase struct {
	At         time.Duration
	Status     int         // the HTTP status answered (200 when hanging or resetting is not asked)
	RetryAfter string      // Retry-After header value, "" for none
	Header     http.Header // every header the answer carries (Retry-After included); shared, never modify
	Share      float64     // (0, 1]
	Hang       bool        // never answers: the attempt timeout or the request deadline ends it
	Reset      bool        // the connection is reset after the TTFB: a transport error
	Latency    Latency     // the phase's latency (the upstream's unless the phase sets its own)
}

// DefaultLatency is the latency of a target without a latency key.
var DefaultLatency = Latency{TTFB: 100 * time.Millisecond, Total: 500 * time.Millisecond}

// DefaultTimeout is a request's deadline when workload.timeout is absent.
const DefaultTimeout = 30 * time.Second

// The raw shapes of the file, decoded strictly. Pointers tell a key left
// out from a zero.
type rawScenario struct {
	Name        string                  `yaml:"name"`
	Description string                  `yaml:"description"`
	Seed        *uint64                 `yaml:"seed"`
	Config      yaml.Node               `yaml:"config"`
	Workload    *rawWorkload            `yaml:"workload"`
	Upstreams   map[string]*rawUpstream `yaml:"upstreams"`
}

type rawWorkload struct {
	Model       string           `yaml:"model"`
	Requests    *int             `yaml:"requests"`
	Concurrency *int             `yaml:"concurrency"`
	Rate        *float64         `yaml:"rate"`
	Timeout     *policy.Duration `yaml:"timeout"`
	Stream      bool             `yaml:"stream"`
}

type rawUpstream struct {
	Latency  *rawLatency `yaml:"latency"`
	Capacity *int        `yaml:"capacity"`
	Phases   []rawPhase  `yaml:"phases"`
}

type rawLatency struct {
	TTFB   *policy.Duration `yaml:"ttfb"`
	Total  *policy.Duration `yaml:"total"`
	Spread *float64         `yaml:"spread"`
}

type rawPhase struct {
	At         *policy.Duration  `yaml:"at"`
	Status     *int              `yaml:"status"`
	RetryAfter *string           `yaml:"retry_after"`
	Headers    map[string]string `yaml:"headers"`
	Share      *float64          `yaml:"share"`
	Hang       bool              `yaml:"hang"`
	Reset      bool              `yaml:"reset"`
	Latency    *rawLatency       `yaml:"latency"`
}

// LoadScenario reads and parses the scenario file at path.
func LoadScenario(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("loadgen: read scenario: %w", err)
	}
	return ParseScenario(path, data)
}

// ParseScenario decodes one scenario document strictly and validates it,
// the inline configuration included (with policy.ParseNode). file names
// the source in errors and gives the default name. The error is a
// *ScenarioError listing every problem with its path and line.
func ParseScenario(file string, data []byte) (*Scenario, error) {
	fail := func(p ...Problem) (*Scenario, error) {
		return nil, &ScenarioError{File: file, Problems: p}
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return fail(Problem{Message: "the scenario is empty"})
		}
		return fail(Problem{Message: "YAML syntax: " + err.Error()})
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return fail(Problem{Line: extra.Line, Message: "the file holds more than one YAML document; write one"})
	case !errors.Is(err, io.EOF):
		return fail(Problem{Message: "YAML syntax: " + err.Error()})
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	if doc.Kind != yaml.MappingNode {
		return fail(Problem{Line: doc.Line, Message: "a scenario must be a mapping with config, workload and upstreams keys"})
	}
	s := &strict{}
	var raw rawScenario
	if err := s.decode(doc, &raw); err != nil {
		return fail(append(s.probs, Problem{Line: doc.Line, Message: err.Error()})...)
	}
	if len(s.probs) > 0 {
		// Values that failed to decode would only cause confusing
		// follow-up problems.
		return fail(sortProblems(s.probs)...)
	}
	sc := &Scenario{Name: raw.Name, Description: raw.Description, Seed: 1, file: file}
	if raw.Seed != nil {
		sc.Seed = *raw.Seed
	}
	if sc.Name == "" {
		sc.Name = strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	}
	if sc.Name == "" || sc.Name == "." {
		sc.Name = "scenario"
	}

	// The configuration: its problems keep their lines (those of this
	// document) and get the config. prefix.
	var cfg *policy.Config
	if raw.Config.Kind == 0 {
		s.add("config", 0, "required: a reroute configuration (model_providers: ...)")
	} else {
		c, warns, err := policy.ParseNode(&raw.Config)
		for _, w := range warns {
			sc.Warnings = append(sc.Warnings, configProblem(w))
		}
		var perr *policy.Error
		switch {
		case errors.As(err, &perr):
			for _, p := range perr.Problems {
				s.probs = append(s.probs, configProblem(p))
			}
		case err != nil:
			s.add("config", raw.Config.Line, "%v", err)
		default:
			cfg = c
			sc.cfg = c
		}
	}

	var index map[string]int
	if cfg != nil {
		index = map[string]int{}
		for i, mp := range cfg.ModelProviders {
			sc.Targets = append(sc.Targets, mp.Model)
			index[mp.Model] = i
		}
	}
	sc.workload(s, raw.Workload, index)
	sc.upstreams(s, raw.Upstreams, index)
	if len(s.probs) > 0 {
		return fail(sortProblems(s.probs)...)
	}
	return sc, nil
}

// configProblem puts a problem of the configuration under the config key.
func configProblem(p policy.Problem) Problem {
	p.Path = yamlkeys.Join("config", p.Path)
	return p
}

func sortProblems(p []Problem) []Problem {
	slices.SortStableFunc(p, func(a, b Problem) int { return a.Line - b.Line })
	return p
}

func (sc *Scenario) workload(s *strict, w *rawWorkload, index map[string]int) {
	if w == nil {
		s.add("workload", 0, "required: model, requests, and concurrency or rate")
		return
	}
	sc.Workload = Workload{Model: w.Model, Timeout: DefaultTimeout, Stream: w.Stream}
	switch _, ok := index[w.Model]; {
	case w.Model == "":
		s.add("workload.model", s.line("workload"), "required: the primary target every request names")
	case index != nil && !ok:
		s.add("workload.model", s.line("workload.model"), "%q is not a configured model (configured: %s)", w.Model, strings.Join(sc.Targets, ", "))
	}
	switch {
	case w.Requests == nil:
		s.add("workload.requests", s.line("workload"), "required: how many requests to send")
	case *w.Requests < 1 || *w.Requests > 1e9:
		s.add("workload.requests", s.line("workload.requests"), "must be between 1 and 1000000000, not %d", *w.Requests)
	default:
		sc.Workload.Requests = *w.Requests
	}
	switch {
	case w.Concurrency != nil && w.Rate != nil:
		s.add("workload.rate", s.line("workload.rate"), "give concurrency (closed loop) or rate (open loop), not both")
	case w.Concurrency == nil && w.Rate == nil:
		s.add("workload", s.line("workload"), "give concurrency (closed loop: requests kept in flight) or rate (open loop: arrivals per second)")
	case w.Concurrency != nil && (*w.Concurrency < 1 || *w.Concurrency > 1e6):
		s.add("workload.concurrency", s.line("workload.concurrency"), "must be between 1 and 1000000, not %d", *w.Concurrency)
	case w.Rate != nil && !(*w.Rate > 0 && *w.Rate <= 1e9):
		s.add("workload.rate", s.line("workload.rate"), "must be a number of arrivals per second > 0, not %v", *w.Rate)
	case w.Concurrency != nil:
		sc.Workload.Concurrency = *w.Concurrency
	default:
		sc.Workload.Rate = *w.Rate
	}
	if w.Timeout != nil {
		if w.Timeout.D() <= 0 {
			s.add("workload.timeout", s.line("workload.timeout"), "must be > 0, not %v", w.Timeout.D())
		}
		sc.Workload.Timeout = w.Timeout.D()
	}
}

func (sc *Scenario) upstreams(s *strict, raw map[string]*rawUpstream, index map[string]int) {
	if index == nil {
		return // the configuration is broken: targets are unknown
	}
	sc.Upstreams = make([]Upstream, len(sc.Targets))
	for i, t := range sc.Targets {
		sc.Upstreams[i] = Upstream{Target: t, Latency: DefaultLatency}
	}
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		p := yamlkeys.Key("upstreams", name)
		i, ok := index[name]
		if !ok {
			s.add(p, s.line(p), "%q is not a configured model (configured: %s)", name, strings.Join(sc.Targets, ", "))
			continue
		}
		u := &sc.Upstreams[i]
		r := raw[name]
		if r == nil {
			continue
		}
		if r.Latency != nil {
			u.Latency = latency(s, p+".latency", r.Latency, DefaultLatency)
		}
		if r.Capacity != nil {
			u.Capacity = *r.Capacity
			if u.Capacity < 1 {
				s.add(p+".capacity", s.line(p+".capacity"), "must be at least 1 attempt at once, not %d (leave it out for no limit)", u.Capacity)
			}
		}
		prev := time.Duration(-1)
		for j, rp := range r.Phases {
			pp := yamlkeys.Index(p+".phases", j)
			ph := Phase{Status: http.StatusOK, Share: 1, Latency: u.Latency, Hang: rp.Hang, Reset: rp.Reset}
			if rp.At != nil {
				ph.At = rp.At.D()
			} else if j > 0 {
				s.add(pp+".at", s.line(pp), "required: when this phase starts (scenario time, e.g. 30s)")
				ph.At = max(prev, 0)
			}
			switch {
			case ph.At < 0:
				s.add(pp+".at", s.line(pp+".at"), "must be ≥ 0, not %v", ph.At)
			case j > 0 && rp.At != nil && ph.At <= prev:
				s.add(pp+".at", s.line(pp+".at"), "must be later than the previous phase's (%v): list phases in time order", prev)
			}
			prev = ph.At
			if rp.Status != nil {
				ph.Status = *rp.Status
				if ph.Status < 100 || ph.Status > 599 {
					s.add(pp+".status", s.line(pp+".status"), "must be an HTTP status 100-599, not %d", ph.Status)
				}
			}
			switch {
			case rp.Hang && rp.Reset:
				s.add(pp+".reset", s.line(pp+".reset"), "a phase hangs or resets the connection, not both")
			case (rp.Hang || rp.Reset) && rp.Status != nil:
				s.add(pp+".status", s.line(pp+".status"), "a phase that hangs or resets the connection answers no status")
			}
			if rp.Share != nil {
				ph.Share = *rp.Share
				if !(ph.Share > 0 && ph.Share <= 1) {
					s.add(pp+".share", s.line(pp+".share"), "must be a fraction of attempts in (0, 1], not %v", ph.Share)
				}
			}
			if len(rp.Headers) > 0 || rp.RetryAfter != nil {
				ph.Header = http.Header{}
				for k, v := range rp.Headers {
					ph.Header.Set(k, v)
				}
			}
			if rp.RetryAfter != nil {
				ph.RetryAfter = *rp.RetryAfter
				ph.Header.Set("Retry-After", ph.RetryAfter)
				if ph.Status < 400 || rp.Hang || rp.Reset {
					s.add(pp+".retry_after", s.line(pp+".retry_after"), "Retry-After is read only on a 4xx or 5xx answer; give status too")
				} else if h := policy.ParseRetryAfter(ph.Status, http.Header{"Retry-After": {ph.RetryAfter}}, time.Unix(0, epoch), 0); !h.Found {
					s.add(pp+".retry_after", s.line(pp+".retry_after"), "%q is not a Retry-After value: write delta-seconds such as \"5\" or an HTTP-date", ph.RetryAfter)
				}
			}
			if rp.Latency != nil {
				ph.Latency = latency(s, pp+".latency", rp.Latency, u.Latency)
			}
			u.Phases = append(u.Phases, ph)
		}
	}
}

// latency reads a latency mapping over base: a key left out inherits base's
// value, except that a total left out keeps base's body time (total − ttfb)
// after the new ttfb.
func latency(s *strict, path string, r *rawLatency, base Latency) Latency {
	l := base
	if r.TTFB != nil {
		l.TTFB = r.TTFB.D()
	}
	if r.Total != nil {
		l.Total = r.Total.D()
	} else {
		l.Total = l.TTFB + (base.Total - base.TTFB)
	}
	if r.Spread != nil {
		l.Spread = *r.Spread
	}
	if l.TTFB < 0 {
		s.add(path+".ttfb", s.line(path+".ttfb"), "must be ≥ 0, not %v", l.TTFB)
	}
	if r.Total != nil && l.Total < l.TTFB {
		s.add(path+".total", s.line(path+".total"), "the whole answer (%v) cannot take less than its first byte (ttfb %v)", l.Total, l.TTFB)
	}
	if math.IsNaN(l.Spread) || l.Spread < 0 || l.Spread > 3 {
		s.add(path+".spread", s.line(path+".spread"), "must be between 0 and 3 (the standard deviation of the latency's logarithm), not %v", l.Spread)
	}
	return l
}

// File returns the name the scenario was parsed from.
func (sc *Scenario) File() string { return sc.file }

// NewConfig returns a copy of the scenario's configuration for one run
// (and its engine). The copy has its own model_providers entries, which a
// run may change where the engine does not look (the HTTP mode rewrites
// base_url), and shares everything else, the compiled form included: the
// configuration was finalized once, by ParseScenario, and is not parsed,
// expanded or finalized again. A Scenario not made by ParseScenario has no
// configuration: that is the error.
func (sc *Scenario) NewConfig() (*policy.Config, error) {
	if sc.cfg == nil {
		return nil, errors.New("loadgen: the scenario has no configuration: make it with ParseScenario or LoadScenario")
	}
	cfg := *sc.cfg
	cfg.ModelProviders = slices.Clone(sc.cfg.ModelProviders)
	return &cfg, nil
}

// Estimate is the expected scenario duration: the arrivals of an open
// loop, or for a closed loop the requests in sequence at the primary's
// healthy latency; never shorter than the last phase start.
func (sc *Scenario) Estimate(requests int) time.Duration {
	var d time.Duration
	w := sc.Workload
	if w.Rate > 0 {
		d = time.Duration(float64(requests) / w.Rate * float64(time.Second))
	} else {
		lat := DefaultLatency.Total
		for _, u := range sc.Upstreams {
			if u.Target == w.Model {
				lat = u.Latency.Total
			}
		}
		d = time.Duration(float64(requests) / float64(w.Concurrency) * float64(lat))
	}
	for _, u := range sc.Upstreams {
		for _, p := range u.Phases {
			d = max(d, p.At)
		}
	}
	return max(d, time.Second)
}
