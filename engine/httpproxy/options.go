package httpproxy

import (
	"context"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/reroute-go/reroute/engine"
)

// Defaults of the handler's options.
const (
	// DefaultMaxBodyBytes bounds a client request body: 32 MiB, the
	// largest request body the major providers accept.
	DefaultMaxBodyBytes = 32 << 20
	// DefaultMaxResponseBytes bounds how much of an upstream response
	// that is not a stream is buffered before it is delivered: 64 MiB.
	DefaultMaxResponseBytes = 64 << 20
	// DefaultMaxBodyMemory bounds the memory of all the client bodies the
	// handler holds at once, being read or held for their attempts: 512
	// MiB, sixteen bodies of the largest size, or thousands of the
	// kilobyte-sized bodies chat clients send.
	DefaultMaxBodyMemory = 512 << 20
	// DefaultBodyReadTimeout bounds the time a client may take to send
	// its body, from the end of its headers: 30 s, like the upstream
	// phases. The bodies chat clients send take milliseconds; at the
	// largest size the default body limit admits (32 MiB), 30 s asks for
	// about 9 Mbit/s.
	DefaultBodyReadTimeout = 30 * time.Second
)

// Option configures a Handler at New.
type Option func(*options)

type options struct {
	logger                *zap.Logger
	transport             http.RoundTripper
	maxBody               int64
	maxBodyMemory         int64
	bodyTimeout           time.Duration
	maxResponse           int64
	contentPolicyFailover bool
	contextLengthFailover bool
	hooks                 StreamHooks
	overhead              func(target string, d time.Duration)
	requestTracer         RequestTracer
	callWrapper           func(engine.Call) engine.Call
	headerInjector        func(context.Context, http.Header)
	contRejectTTL         time.Duration
}

func defaultOptions() options {
	return options{
		logger:                zap.NewNop(),
		maxBody:               DefaultMaxBodyBytes,
		maxBodyMemory:         DefaultMaxBodyMemory,
		bodyTimeout:           DefaultBodyReadTimeout,
		maxResponse:           DefaultMaxResponseBytes,
		contextLengthFailover: true,
		contRejectTTL:         DefaultContinuationRejectionTTL,
	}
}

// WithLogger sets the logger; the default is zap.NewNop(). Failed attempts
// are logged at debug with the request id and the SHA-256 of the client's
// body, failures after commit at warn. Bodies and credentials are never
// logged.
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.logger = l
		}
	}
}

// WithTransport sets the RoundTripper every upstream attempt is sent with;
// the handler calls its RoundTrip directly, so redirects are not followed
// and nothing is retried behind the engine's back (a POST with no GetBody
// is never replayed by net/http). The default is an http.Transport owned
// by the handler, whose dialer honours each target's connect timeout; with
// another transport the connect phase is still bounded (the attempt's
// context is cancelled), but an abandoned dial is the transport's to end.
func WithTransport(rt http.RoundTripper) Option {
	return func(o *options) {
		if rt != nil {
			o.transport = rt
		}
	}
}

// WithMaxBodyBytes bounds a client request body; a larger one is refused
// with 413 before any upstream sees it. n ≤ 0 keeps the default
// (DefaultMaxBodyBytes).
func WithMaxBodyBytes(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.maxBody = n
		}
	}
}

// WithMaxBodyMemory bounds the memory of all the client bodies the handler
// holds at once: the buffers of the bodies being read, and of those read
// and held while their attempts run, until their requests end. A buffer
// grows with the bytes that arrive, so a client that announces a large
// body and sends little holds little. A request whose body would take the
// total past n is refused with 503 (code gateway_busy, Retry-After: 1) and
// its connection closed. n ≤ 0 keeps the default (DefaultMaxBodyMemory);
// a bound below the body limit (WithMaxBodyBytes) is raised to it, so that
// a body of the largest size can always be read alone.
func WithMaxBodyMemory(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.maxBodyMemory = n
		}
	}
}

// WithBodyReadTimeout bounds the time a client may take to send its whole
// body, counted from when the handler is called (the end of the request
// headers). Past it the client gets 408 (code request_timeout) and the
// connection is closed. d < 0 means no limit; 0 keeps the default
// (DefaultBodyReadTimeout). It is applied with the connection's read
// deadline (http.ResponseController.SetReadDeadline, which net/http's
// HTTP/1 and HTTP/2 servers support); with a ResponseWriter that has none
// the body is read without a deadline.
func WithBodyReadTimeout(d time.Duration) Option {
	return func(o *options) {
		switch {
		case d < 0:
			o.bodyTimeout = 0
		case d > 0:
			o.bodyTimeout = d
		}
	}
}

// WithMaxResponseBytes bounds how much of an upstream response that is not
// a stream is read before the engine decides on it. A body within the
// bound is read whole before anything reaches the client, so a cut body is
// a failed attempt and can be retried; past it, the rest is relayed after
// commit and a failure then aborts the client's response. The buffer grows
// with what arrives (it is never sized from a Content-Length alone), is
// dropped once it has been written to the client, and is never pooled.
// The same bound applies to what a stream may send before its first event
// (comments and pings are held back with it): past it, the attempt fails
// (upstream_response_too_large). n ≤ 0 keeps the default
// (DefaultMaxResponseBytes).
func WithMaxResponseBytes(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.maxResponse = n
		}
	}
}

// WithContentPolicyFailover sets what a content-policy rejection (a 4xx
// whose body says a safety system refused the prompt) does. false, the
// default: it is returned to the client at once, as the upstream sent it,
// with no retry and no failover: sending a refused prompt to another vendor
// would override a deliberate refusal. true: it fails over like any other
// error of its status, but never to the same target again.
func WithContentPolicyFailover(on bool) Option {
	return func(o *options) { o.contentPolicyFailover = on }
}

// WithContextLengthFailover sets what a context-length rejection (the
// prompt does not fit the model's window) does. true, the default: it is
// never retried on the same target, but the request may fail over to
// another (a fallback with a larger window). false: it is returned to the
// client at once, as the upstream sent it.
func WithContextLengthFailover(on bool) Option {
	return func(o *options) { o.contextLengthFailover = on }
}

// StreamHooks are optional callbacks about the streams the handler
// relays, for a host to export as metrics. A nil field is skipped. They
// run on the goroutine serving the request and must be quick and safe for
// concurrent use.
type StreamHooks struct {
	// Malformed is called with the target's id once for every malformed
	// event of a stream after commit: each one skipped, and the one past
	// MaxMalformedEvents that ends the stream
	// (docs/gateway.md#tolerated-stream-oddities). A malformed first
	// event is a failed attempt instead, seen in the engine's hooks.
	Malformed func(target string)
}

// WithOverheadHook sets a function called once per request the engine ran,
// with the request's primary target and the time the gateway itself added:
// from the moment the client's body was read until the answer is ready to
// relay (or the error to render), less the time spent in upstream calls and
// in the engine's deliberate waits (backoff, Retry-After). A metrics
// exporter histograms it (package prom's ObserveOverhead). nil, the
// default, costs nothing.
func WithOverheadHook(f func(target string, d time.Duration)) Option {
	return func(o *options) { o.overhead = f }
}

// WithStreamHooks sets the stream hooks; the default has none.
func WithStreamHooks(h StreamHooks) Option {
	return func(o *options) { o.hooks = h }
}

// RequestTracer is called once per request that reaches the engine, on the
// goroutine serving it, before its first attempt: ctx is the request's
// context (it carries the request id, engine.RequestID) and model the id
// of the primary target the client's model resolved to. The context it
// returns is the one the engine runs the request with, so whatever it
// carries (a tracing span) is in every attempt's context; end is called
// once, on the same goroutine, after the answer has been relayed to the
// client (a stream to its end) or the error rendered, with what the
// engine returned (for a stream that was continued, the last
// continuation's Result, whose Attempts count every attempt). end may be
// nil. Requests refused before the engine
// (invalid body, unknown model) are not traced.
type RequestTracer func(ctx context.Context, model string) (context.Context, func(engine.Result, error))

// WithRequestTracer sets the function that brackets every request run
// through the engine (package otelreroute's Tracer.StartRequest makes a
// span of it). nil, the default, means none and costs nothing.
func WithRequestTracer(f RequestTracer) Option {
	return func(o *options) { o.requestTracer = f }
}

// WithCallWrapper sets a function that wraps the engine.Call of every
// request (package otelreroute's Tracer.WrapCall makes a span of each
// attempt): the engine calls the wrapped call once per attempt, and it
// must call the call it wraps exactly once, with the context it got or
// one derived from it, and return its outcome. It is called once per
// request. nil, the default, means none and costs nothing.
func WithCallWrapper(f func(engine.Call) engine.Call) Option {
	return func(o *options) { o.callWrapper = f }
}

// WithHeaderInjector sets a function that adds headers to every upstream
// request from the attempt's context, the one the engine (and a call
// wrapper) passed to the attempt: a tracing propagator writes the trace
// context there (traceparent). It is called once per attempt, on the
// request's goroutine, with the attempt's own copy of the header (the
// client's forwarded headers), before the handler sets the credential
// headers, which therefore always win. nil, the default, means none and
// costs nothing.
func WithHeaderInjector(f func(ctx context.Context, h http.Header)) Option {
	return func(o *options) { o.headerInjector = f }
}

// WithContinuationRejectionTTL sets how long a target that rejected a
// continuation request is not asked for another, by any request
// (docs/gateway.md#continuing-a-cut-stream). d ≤ 0 keeps the default
// (DefaultContinuationRejectionTTL).
func WithContinuationRejectionTTL(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.contRejectTTL = d
		}
	}
}

// connectKey carries an attempt's connect timeout to the default
// transport's dialer. net/http dials with a context detached from the
// request's cancellation but keeping its values.
type connectKey struct{}

// newTransport is the handler's own transport: keep-alive pools sized for
// a gateway (the standard two idle connections per host would make a busy
// gateway dial all the time), HTTP/2 when the upstream offers it, and a
// dialer that applies the connect timeout of the attempt that asked.
func newTransport() *http.Transport {
	d := &net.Dialer{KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if to, ok := ctx.Value(connectKey{}).(time.Duration); ok && to > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, to)
				defer cancel()
			}
			return d.DialContext(ctx, network, addr)
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}
