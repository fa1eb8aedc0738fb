// Command loadgen watches reroute handle an outage: it runs a scenario
// (what the upstreams do over time, what load arrives) through the engine
// and reports which provider got how many attempts, how many requests still
// succeeded and how long they took.
//
// Usage:
//
//	loadgen [flags] [scenario.yaml | sample-name]
//
// With no scenario it runs the built-in default (bench/scenarios/default.yaml).
// A name that is not a file but names a sample of bench/scenarios (with or
// without .yaml) runs the embedded copy of that sample. See docs/loadgen.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/reroute-go/reroute/bench"
	"github.com/reroute-go/reroute/policy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, isTerminal(os.Stderr))
	stop()
	os.Exit(code)
}

// run is the whole command; it returns the exit status: 0 done, 1 the run
// failed, 2 bad usage or a bad scenario.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, tty bool) int {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var baselines listFlag
	fs.Var(&baselines, "baseline", "also run `BASELINES` on the same scenario and show them side by side: a comma-separated list of naive, naive-failover and no-hedge (repeatable; none for no baseline)")
	var (
		mode     = fs.String("mode", bench.ModeSim, "sim: in-process, virtual time, deterministic; http: loopback upstreams and the HTTP adapter, real time")
		jsonOut  = fs.String("json", "", "write the results as JSON to `FILE` (- for stdout)")
		report   = fs.String("report", "", "write a self-contained HTML report with charts to `FILE`")
		requests = fs.Int("requests", 0, "override workload.requests with `N`")
		seedFlag = fs.String("seed", "", "override the scenario's seed")
		quiet    = fs.Bool("quiet", false, "no progress line on stderr")
		list     = fs.Bool("list", false, "list the sample scenarios built in and exit")
		replicas = fs.Int("replicas", 1, "run reroute as `N` replicas, each with its own health state, requests arriving at them in turn (sim mode)")
		lockTTL  = fs.Duration("probe-lock-ttl", policy.DefaultSharedProbeLockTTL, "with -share-delay: model the fleet's probe lock with this TTL (one replica probes an ejected target); 0: every replica probes")
		shareDly = fs.String("share-delay", "none", "with -replicas: replicas share health facts after this `delay` (\"5ms\", \"0s\"), and the same run without sharing is shown beside; none: they do not share")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: loadgen [flags] [scenario.yaml | sample-name]\n\n")
		fmt.Fprintf(stderr, "Runs a scenario through reroute and reports attempts, successes and latency.\n")
		fmt.Fprintf(stderr, "Without a scenario it runs the built-in default. See docs/loadgen.md.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *list {
		for _, n := range bench.SampleScenarios() {
			fmt.Fprintln(stdout, strings.TrimSuffix(n, ".yaml"))
		}
		return 0
	}
	if fs.NArg() > 1 {
		fmt.Fprintf(stderr, "loadgen: one scenario at a time, got %d\n", fs.NArg())
		fs.Usage()
		return 2
	}
	if *mode != bench.ModeSim && *mode != bench.ModeHTTP {
		fmt.Fprintf(stderr, "loadgen: -mode must be sim or http, not %q\n", *mode)
		return 2
	}
	bases, err := bench.ParseBaselines(strings.Join(baselines, ","))
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: -baseline must list naive, naive-failover, no-hedge or none, not %q\n", strings.Join(baselines, ","))
		return 2
	}
	if *requests < 0 {
		fmt.Fprintf(stderr, "loadgen: -requests must be positive, not %d\n", *requests)
		return 2
	}
	if *replicas < 1 || *replicas > 1024 {
		fmt.Fprintf(stderr, "loadgen: -replicas must be between 1 and 1024, not %d\n", *replicas)
		return 2
	}
	opts := bench.Options{Requests: *requests, Replicas: *replicas}
	if *shareDly != "none" {
		d, err := time.ParseDuration(*shareDly)
		if err != nil || d < 0 {
			fmt.Fprintf(stderr, "loadgen: -share-delay must be a duration such as 5ms, or none, not %q\n", *shareDly)
			return 2
		}
		if *replicas < 2 {
			fmt.Fprintf(stderr, "loadgen: -share-delay needs -replicas 2 or more\n")
			return 2
		}
		opts.Share, opts.ShareDelay, opts.ProbeLockTTL = true, d, *lockTTL
	}
	if *lockTTL < 0 {
		fmt.Fprintf(stderr, "loadgen: -probe-lock-ttl must not be negative, not %v\n", *lockTTL)
		return 2
	}
	if *replicas > 1 && *mode != bench.ModeSim {
		fmt.Fprintf(stderr, "loadgen: -replicas runs in sim mode only\n")
		return 2
	}
	if *seedFlag != "" {
		s, err := strconv.ParseUint(*seedFlag, 10, 64)
		if err != nil {
			fmt.Fprintf(stderr, "loadgen: -seed must be an unsigned integer, not %q\n", *seedFlag)
			return 2
		}
		opts.Seed = &s
	}

	sc, err := load(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	for _, w := range sc.Warnings {
		fmt.Fprintf(stderr, "loadgen: %s: warning: %s\n", sc.File(), w)
	}
	if *mode == bench.ModeHTTP {
		n := *requests
		if n == 0 {
			n = sc.Workload.Requests
		}
		if est := sc.Estimate(n); est > 20*time.Second {
			fmt.Fprintf(stderr, "loadgen: http mode runs in real time: this scenario lasts about %v; -requests N shortens it\n", est.Round(time.Second))
		}
	}
	if !*quiet {
		p := &progress{w: stderr, tty: tty}
		opts.Progress = p.update
		opts.ProgressEvery = time.Second
		if tty {
			opts.ProgressEvery = 200 * time.Millisecond
		}
	}
	// Open the outputs first: nothing runs if one cannot be written.
	var jsonW, reportW *os.File
	if *jsonOut != "" && *jsonOut != "-" {
		if jsonW, err = os.Create(*jsonOut); err != nil {
			fmt.Fprintf(stderr, "loadgen: %v\n", err)
			return 2
		}
		defer jsonW.Close()
	}
	if *report != "" {
		if reportW, err = os.Create(*report); err != nil {
			fmt.Fprintf(stderr, "loadgen: %v\n", err)
			return 2
		}
		defer reportW.Close()
	}

	res, err := bench.Run(ctx, sc, *mode, bases, opts)
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}
	if err := res.WriteSummary(stdout); err != nil {
		fmt.Fprintf(stderr, "loadgen: %v\n", err)
		return 1
	}
	if *jsonOut == "-" {
		err = res.WriteJSON(stdout)
	} else if jsonW != nil {
		if err = res.WriteJSON(jsonW); err == nil {
			err = jsonW.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "loadgen: write JSON: %v\n", err)
		return 1
	}
	if reportW != nil {
		if err = res.WriteReport(reportW); err == nil {
			err = reportW.Close()
		}
		if err != nil {
			fmt.Fprintf(stderr, "loadgen: write report: %v\n", err)
			return 1
		}
	}
	return 0
}

// load reads the scenario: the default with no name, a file, or an
// embedded sample.
func load(name string) (*bench.Scenario, error) {
	if name == "" {
		return bench.ParseScenario("default.yaml", bench.DefaultScenario())
	}
	if _, err := os.Stat(name); err != nil && !strings.ContainsRune(name, os.PathSeparator) {
		for _, n := range []string{name, name + ".yaml"} {
			if data, err := bench.SampleScenario(n); err == nil {
				return bench.ParseScenario(n, data)
			}
		}
	}
	return bench.LoadScenario(name)
}

// listFlag collects every value of a repeated flag, in order; each value
// may itself be a comma-separated list, split later.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// progress prints the live progress line: rewritten in place on a
// terminal, otherwise one line per call (about one a second), never the
// final one.
type progress struct {
	w   io.Writer
	tty bool
}

func (p *progress) update(s bench.Progress) {
	if s.Final && !p.tty {
		return
	}
	ok := 100.0
	if s.Done > 0 {
		ok = 100 * float64(s.Succeeded) / float64(s.Done)
	}
	perSec := 0.0
	if s.Elapsed > 0 {
		perSec = float64(s.Done) / s.Elapsed.Seconds()
	}
	line := fmt.Sprintf("loadgen %-14s %7.1fs  %d/%d done  %.2f%% ok  %.0f req/s  scenario time %s",
		s.Policy, s.Elapsed.Seconds(), s.Done, s.Total, ok, perSec, s.Scenario.Round(100*time.Millisecond))
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s", line)
		if s.Final {
			fmt.Fprintln(p.w)
		}
		return
	}
	fmt.Fprintln(p.w, line)
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
