package httpproxy

import (
	"context"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"
)

// Defaults of the handler's options.
const (
	// DefaultMaxBodyBytes bounds a client request body: 32 MiB, the
	// largest request body the major providers accept.
	DefaultMaxBodyBytes = 32 << 20
	// DefaultMaxResponseBytes bounds how much of an upstream response
	// that is not a stream is buffered before it is delivered: 64 MiB.
	DefaultMaxResponseBytes = 64 << 20
)

// Option configures a Handler at New.
type Option func(*options)

type options struct {
	logger                *zap.Logger
	transport             http.RoundTripper
	maxBody               int64
	maxResponse           int64
	contentPolicyFailover bool
	contextLengthFailover bool
}

func defaultOptions() options {
	return options{
		logger:                zap.NewNop(),
		maxBody:               DefaultMaxBodyBytes,
		maxResponse:           DefaultMaxResponseBytes,
		contextLengthFailover: true,
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

// WithMaxResponseBytes bounds how much of an upstream response that is not
// a stream is read before the engine decides on it. A body within the
// bound is read whole before anything reaches the client, so a cut body is
// a failed attempt and can be retried; past it, the rest is relayed after
// commit and a failure then aborts the client's response. n ≤ 0 keeps the
// default (DefaultMaxResponseBytes).
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
