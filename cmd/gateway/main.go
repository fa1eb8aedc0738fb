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
// flight finish (streams included) for up to -shutdown-timeout, then closes
// the engine. See docs/gateway.md.
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
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/reroute-go/reroute/engine"
	"github.com/reroute-go/reroute/engine/httpproxy"
	"github.com/reroute-go/reroute/policy"
)

func main() {
	ctx, stop := signalContext()
	err := run(ctx, os.Args[1:], os.Stderr, nil)
	stop()
	switch {
	case errors.Is(err, errUsage):
		os.Exit(2)
	case err != nil:
		os.Exit(1)
	}
}

// signalContext is done at the first SIGINT or SIGTERM. A second signal
// kills the process the default way, once stop has been called.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

var (
	errUsage  = errors.New("gateway: bad usage")
	errConfig = errors.New("gateway: invalid configuration")
)

// run is the whole command. It returns when ctx is done and the server has
// shut down (nil), or at once with an error it has already printed or
// logged. ready, when not nil, is called with the address once the server
// listens.
func run(ctx context.Context, args []string, stderr io.Writer, ready func(addr string)) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		config        = fs.String("config", "reroute.yaml", "the reroute configuration `file` (YAML)")
		addr          = fs.String("addr", "127.0.0.1:8080", "listen on this `address`")
		grace         = fs.Duration("shutdown-timeout", 30*time.Second, "on SIGINT/SIGTERM, how long requests in flight may take to finish")
		level         = fs.String("log-level", "info", "log level: debug (every failed attempt), info, warn, error")
		maxBody       = fs.Int64("max-body-bytes", httpproxy.DefaultMaxBodyBytes, "refuse client bodies larger than this (413)")
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
	adm := newAdmin(ctx, cfg, *adminAddr, log)
	e, err := engine.New(cfg, engine.WithLogger(log), adm.hooks())
	if err != nil {
		fmt.Fprintf(stderr, "gateway: %s: %v\n", *config, err)
		return errConfig
	}
	h, err := httpproxy.New(e,
		httpproxy.WithLogger(log),
		httpproxy.WithMaxBodyBytes(*maxBody),
		httpproxy.WithContentPolicyFailover(*policyFO),
		httpproxy.WithContextLengthFailover(*contextLenFO))
	if err != nil {
		_ = e.Close()
		fmt.Fprintf(stderr, "gateway: %s: %v\n", *config, err)
		return errConfig
	}
	defer h.CloseIdleConnections()
	defer func() { _ = e.Close() }()
	adm.attach(e)

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
		Handler:           adm.handler(h),
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
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("requests still in flight at the shutdown timeout were cut", zap.Error(err))
		_ = srv.Close()
	}
	<-served // http.ErrServerClosed
	// Deferred: the engine closes (nothing is in flight any more), then
	// the upstream connections.
	log.Info("gateway stopped")
	return nil
}

// newLogger is zap's production logger (JSON, info level by default,
// sampling, epoch timestamps, stack traces from error level)
// writing to w.
func newLogger(w io.Writer, level zapcore.Level) *zap.Logger {
	pc := zap.NewProductionConfig()
	out := zapcore.Lock(zapcore.AddSync(w))
	core := zapcore.NewCore(zapcore.NewJSONEncoder(pc.EncoderConfig), out, level)
	core = zapcore.NewSamplerWithOptions(core, time.Second, pc.Sampling.Initial, pc.Sampling.Thereafter)
	return zap.New(core, zap.AddCaller(), zap.AddStacktrace(zapcore.ErrorLevel), zap.ErrorOutput(out))
}
