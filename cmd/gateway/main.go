// Command gateway serves reroute's OpenAI-compatible HTTP handler
// (engine/httpproxy): POST /v1/chat/completions, with the retries and
// failover of a reroute configuration between the client and the
// providers.
//
// Usage:
//
//	gateway -config reroute.yaml -addr 127.0.0.1:8080
//
// It logs JSON with a zap production logger on stderr, logs the
// configuration's warnings at start, and refuses to start when the
// configuration has errors (it prints them and exits with status 1). On
// SIGINT or SIGTERM it stops accepting connections, lets the requests in
// flight finish (streams included) for up to -shutdown-timeout, then ends
// the streams still running with an in-band error event and closes the
// engine. A second signal ends the grace period at once (exit status 1).
// See docs/gateway.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/engine/httpproxy"
	"github.com/reroute-go/reroute/policy"
)

func main() {
	ctx, now, stop := signalContext()
	err := run(ctx, now, os.Args[1:], os.Stderr, nil)
	stop()
	switch {
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		os.Exit(1)
	}
}

// signalContext is done at the first SIGINT or SIGTERM; now is closed at
// the second, which ends the shutdown grace period at once. stop releases
// the signals (the default action applies again) and waits for the
// goroutine that watches them.
func signalContext() (ctx context.Context, now <-chan struct{}, stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	nowc, quit, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-sigs:
			cancel()
		case <-quit:
			return
		}
		select {
		case <-sigs:
			close(nowc)
		case <-quit:
		}
	}()
	var once sync.Once
	return ctx, nowc, func() {
		once.Do(func() {
			signal.Stop(sigs)
			close(quit)
			<-done
			cancel()
		})
	}
}

var (
	errUsage  = errors.New("gateway: bad usage")
	errConfig = errors.New("gateway: invalid configuration")
)

// run is the whole command. It returns when ctx is done and the server has
// shut down (nil), or at once with an error it has already printed or
// logged. now, when closed during the shutdown grace period, ends it at
// once (errForced). ready, when not nil, is called with the address once
// the server listens.
func run(ctx context.Context, now <-chan struct{}, args []string, stderr io.Writer, ready func(addr string)) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		config        = fs.String("config", "reroute.yaml", "the reroute configuration `file` (YAML)")
		addr          = fs.String("addr", "127.0.0.1:8080", "listen on this `address`")
		grace         = fs.Duration("shutdown-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long requests in flight may take to finish")
		level         = fs.String("log-level", "info", "log level: debug (every failed attempt, unsampled), info, warn, error")
		maxBody       = fs.Int64("max-body-bytes", httpproxy.DefaultMaxBodyBytes, "refuse client bodies larger than this (413)")
		bodyMem       = fs.Int64("max-body-memory", httpproxy.DefaultMaxBodyMemory, "bound the memory of all client bodies held at once; a request past it gets 503 gateway_busy")
		bodyTimeout   = fs.Duration("body-read-timeout", httpproxy.DefaultBodyReadTimeout, "how long a client may take to send its request body (408 past it; 0 for no limit)")
		maxResponse   = fs.Int64("max-response-bytes", httpproxy.DefaultMaxResponseBytes, "buffer at most this much of an upstream answer that is not a stream before delivering it")
		policyFO      = fs.Bool("content-policy-failover", false, "fail over a content-policy refusal instead of returning it (see docs/gateway.md)")
		contextLenFO  = fs.Bool("context-length-failover", true, "fail over a context-length rejection to another target (never the same one)")
		headerTimeout = fs.Duration("read-header-timeout", 10*time.Second, "how long a client may take to send its request headers")
		adminAddr     = fs.String("admin-addr", "", "serve /metrics, /healthz, /readyz and /debug/reroute/blocks on this `address` instead of -addr")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: gateway -config reroute.yaml -addr 127.0.0.1:8080\n\n")
		fmt.Fprintf(stderr, "Serves POST /v1/chat/completions (OpenAI-compatible) through reroute's\nretries and failover. See docs/gateway.md.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gateway: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	var lvl zapcore.Level
	if err := lvl.Set(*level); err != nil {
		fmt.Fprintf(stderr, "gateway: -log-level: %v\n", err)
		return errUsage
	}
	log := newLogger(stderr, lvl)
	defer func() { _ = log.Sync() }()

	cfg, warns, err := policy.Load(*config)
	if err != nil {
		fmt.Fprintf(stderr, "gateway: %s: %v\n", *config, err)
		return errConfig
	}
	for _, w := range warns {
		log.Warn("configuration warning", zap.String("file", *config), zap.String("path", w.Path),
			zap.String("model", w.Model), zap.Int("line", w.Line), zap.String("warning", w.Message))
	}
	// A policy that may fail over to targets it does not list can answer a
	// request for one model with another: say so, once per policy.
	for _, u := range policy.UnlistedFailovers(cfg) {
		log.Warn("policy may fail over to targets it does not list", zap.String("file", *config), zap.String("path", u.Path),
			zap.String("model", u.Model), zap.String("unlisted_failover", string(u.Mode)), zap.Strings("targets", u.Targets),
			zap.String("remedy", "list them in fallback_models, or set unlisted_failover: same_model or none"))
	}
	// Load finalized cfg: engine.New does not finalize it again, so the
	// warnings above, with their lines, are the only ones logged.
	trc, err := newTracing(ctx, os.Getenv, log)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return err
	}
	defer trc.shutdown(log) // last: after the engine has closed
	adm := newAdmin(ctx, cfg, *adminAddr, log)
	sharer, shareOpts, err := newSharer(cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "gateway: %s: %v\n", *config, err)
		return errConfig
	}
	if sharer != nil {
		defer func() { _ = sharer.Close() }() // on the early returns below; idempotent
	}
	e, err := engine.New(cfg, append(shareOpts, engine.WithLogger(log), adm.hooks())...)
	if err != nil {
		fmt.Fprintf(stderr, "gateway: %s: %v\n", *config, err)
		return errConfig
	}
	h, err := httpproxy.New(e, append(trc.options(e),
		httpproxy.WithLogger(log),
		httpproxy.WithMaxBodyBytes(*maxBody),
		httpproxy.WithMaxBodyMemory(*bodyMem),
		httpproxy.WithBodyReadTimeout(noLimit(*bodyTimeout)),
		httpproxy.WithMaxResponseBytes(*maxResponse),
		httpproxy.WithContentPolicyFailover(*policyFO),
		httpproxy.WithContextLengthFailover(*contextLenFO),
		httpproxy.WithOverheadHook(adm.col.ObserveOverhead))...)
	if err != nil {
		_ = e.Close()
		fmt.Fprintf(stderr, "gateway: %s: %v\n", *config, err)
		return errConfig
	}
	defer h.CloseIdleConnections()
	defer func() { _ = e.Close() }()
	adm.attach(e)
	adm.attachProxy(h)
	if sharer != nil {
		// Connects in the background: the gateway serves on its own
		// health state until Redis answers. Closed before the engine.
		_ = sharer.Start(e.Actor())
		defer func() { _ = sharer.Close() }()
		adm.attachShared(sharer)
		log.Info("sharing health facts through Redis", zap.String("address", cfg.Engine.SharedHealth.Address),
			zap.String("channel", cfg.Engine.SharedHealth.Channel), zap.String("replica_id", sharer.ReplicaID()))
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Error("cannot listen", zap.String("addr", *addr), zap.Error(err))
		return err
	}
	if err := adm.listen(*headerTimeout); err != nil {
		_ = ln.Close()
		return err
	}
	defer adm.close()
	srv := &http.Server{
		Handler:           adm.handler(trc.handler(e, h)),
		ReadHeaderTimeout: *headerTimeout,
		// No ReadTimeout or WriteTimeout: a stream may last minutes,
		// and the per-attempt timeouts bound the upstream side.
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    zap.NewStdLog(log.Named("http")),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	targets := make([]string, 0, len(cfg.ModelProviders))
	for _, mp := range cfg.ModelProviders {
		targets = append(targets, mp.Model)
	}
	log.Info("gateway listening", zap.String("addr", ln.Addr().String()), zap.String("path", httpproxy.Path),
		zap.String("config", *config), zap.Strings("targets", targets))
	if ready != nil {
		ready(ln.Addr().String())
	}

	select {
	case err := <-served:
		log.Error("server failed", zap.Error(err))
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: letting requests in flight finish", zap.Duration("timeout", *grace))
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	// A second signal ends the grace period: forced is set before the
	// grace context is cancelled, and read after the watcher has ended.
	var forced error
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-now:
			log.Warn("second signal: ending the shutdown grace period at once")
			forced = errForced
			cancel()
		case <-sctx.Done():
		}
	}()
	err = srv.Shutdown(sctx)
	cancel()
	<-watched
	if err != nil {
		// Streams get the in-band error event every other failure after
		// commit gets, and a moment to write it, before the
		// connections are closed.
		log.Warn("requests still in flight at the end of the grace period are cut", zap.Error(err))
		h.EndStreams()
		fctx, fcancel := context.WithTimeout(context.Background(), streamEndWait)
		_ = srv.Shutdown(fctx)
		fcancel()
		_ = srv.Close()
	}
	<-served // http.ErrServerClosed
	// Deferred: the engine closes (nothing is in flight any more), then
	// the upstream connections.
	log.Info("gateway stopped")
	return forced
}

// streamEndWait is how long the streams cut at the end of the grace period
// have to write their error event before their connections are closed.
const streamEndWait = time.Second

// errForced is run's error when a second signal ended the grace period.
var errForced = errors.New("gateway: stopped by a second signal")

// noLimit maps the flag's 0 (no limit) to the handler's negative value.
func noLimit(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// newLogger is zap's production logger (JSON, info level by default,
// sampling, epoch timestamps, stack traces from error level)
// writing to w. At debug level it does not sample: -log-level debug
// promises every failed attempt, and zap's sampler would keep only the
// first 100 lines of a message per second.
func newLogger(w io.Writer, level zapcore.Level) *zap.Logger {
	pc := zap.NewProductionConfig()
	out := zapcore.Lock(zapcore.AddSync(w))
	core := zapcore.NewCore(zapcore.NewJSONEncoder(pc.EncoderConfig), out, level)
	if level > zapcore.DebugLevel {
		core = zapcore.NewSamplerWithOptions(core, time.Second, pc.Sampling.Initial, pc.Sampling.Thereafter)
	}
	return zap.New(core, zap.AddCaller(), zap.AddStacktrace(zapcore.ErrorLevel), zap.ErrorOutput(out))
}
