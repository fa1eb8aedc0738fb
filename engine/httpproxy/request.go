package httpproxy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/reroute-go/reroute/engine"
)

// request is one client request on its way through the engine. It is
// owned by the goroutine serving the request: Do calls call on it, and a
// hedging policy may have two calls running at once (the hedge's on
// another goroutine), so what the calls share is guarded by mu.
type request struct {
	h    *Handler
	r    *http.Request
	id   string
	body []byte // the client's body, as it came
	sent string // the model the client's body names
	sum  string // SHA-256 of body, hex; see bodySum
	// sumOnce guards sum: a hedged request's two calls may log at once.
	sumOnce sync.Once
	hdr     http.Header
	cur     *attempt // the delivered attempt, chosen by pick after Do succeeds

	mu   sync.Mutex
	alt  []altBody
	atts []*attempt // every attempt not yet released
	// cont is set when the request may be continued (continuation.go);
	// nil for every other request.
	cont *continuation
	ctx  context.Context // the request's, as the engine runs it
	do   engine.Call     // the call the engine runs, wrapped (WithCallWrapper)
	// outside is the request's time spent in upstream calls and in the
	// engine's waits, taken off its elapsed time to give the gateway's own
	// overhead (WithOverheadHook). Overlapping calls (a hedge) both count,
	// so a hedged request's overhead is understated by the overlap.
	outside time.Duration
}

// altBody is the client's body with another model value, made once per
// model a request needs.
type altBody struct {
	model string
	body  []byte
}

// header builds the header template every attempt starts from: the
// client's headers without credentials, hop-by-hop headers and those the
// handler sets itself.
func (rq *request) header() {
	in := rq.r.Header
	conn := in["Connection"]
	h := make(http.Header, len(in)+3)
	for k, v := range in {
		if dropRequestHeader(k) || listedIn(conn, k) {
			continue
		}
		h[k] = v
	}
	h["X-Request-Id"] = []string{rq.id}
	rq.hdr = h
}

// dropRequestHeader lists the client headers never forwarded: credentials
// (they would reach targets they were not meant for: docs/gateway.md#what-happens-to-a-request),
// hop-by-hop headers, and headers the transport sets for the body it
// sends. Accept-Encoding is dropped because the handler reads bodies (to
// classify errors and to follow a stream): the transport negotiates gzip
// itself and decompresses.
func dropRequestHeader(k string) bool {
	switch k {
	case "Authorization", "X-Api-Key", "Api-Key", "X-Goog-Api-Key", "Anthropic-Version", "Proxy-Authorization",
		"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Content-Length", "Accept-Encoding", "Expect", "Host", "X-Request-Id":
		return true
	}
	return false
}

func listedIn(conn []string, k string) bool {
	for _, v := range conn {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" && http.CanonicalHeaderKey(f) == k {
				return true
			}
		}
	}
	return false
}

// bodyFor returns the body to send to a target whose model name is model:
// the client's bytes when they already name it, otherwise the client's
// bytes with only the model value replaced (docs/gateway.md#what-happens-to-a-request).
func (rq *request) bodyFor(model string) []byte {
	if model == rq.sent {
		return rq.body
	}
	rq.mu.Lock()
	defer rq.mu.Unlock()
	for _, a := range rq.alt {
		if a.model == model {
			return a.body
		}
	}
	b, ok := ReplaceModel(rq.body, model)
	if !ok {
		// Cannot happen for a body ServeHTTP accepted (a JSON object
		// with a string model); kept as the documented fallback.
		var err error
		if b, err = RewriteModel(rq.body, model); err != nil {
			b = rq.body
		}
	}
	rq.alt = append(rq.alt, altBody{model, b})
	return b
}

// release frees every attempt. ServeHTTP defers it: it closes failed
// attempts' responses when Do returns an error, and the delivered one after
// relaying it. Do has returned by then, so no call is running.
func (rq *request) release() {
	rq.mu.Lock()
	defer rq.mu.Unlock()
	for _, at := range rq.atts {
		at.release()
	}
	rq.atts = nil
}

// begin registers attempt at, whose call is starting, and releases the
// attempts whose calls have returned: they failed or lost to a hedge, since
// the engine asked for another attempt. A hedge's call leaves the attempt
// it hedges alone, returned or not: that attempt may be the one delivered
// (it can return just as the hedge starts), and only Do's result says.
func (rq *request) begin(at *attempt, hedge bool) {
	rq.mu.Lock()
	defer rq.mu.Unlock()
	kept := rq.atts[:0]
	for _, o := range rq.atts {
		if o.returned && (!hedge || o.number < at.number-1) {
			o.release()
			continue
		}
		kept = append(kept, o)
	}
	rq.atts = append(kept, at)
}

// returned marks at's call as returned, adding its time to outside.
func (rq *request) returned(at *attempt, wait time.Duration, overhead bool) {
	rq.mu.Lock()
	defer rq.mu.Unlock()
	at.returned = true
	if overhead {
		rq.outside += wait + time.Since(at.start)
	}
}

// pick makes the attempt of number n the delivered one (rq.cur) and
// releases the others: a hedge's loser is closed here, before the winner
// is relayed.
func (rq *request) pick(n int) {
	rq.mu.Lock()
	defer rq.mu.Unlock()
	kept := rq.atts[:0]
	for _, at := range rq.atts {
		if at.number == n {
			rq.cur = at
			kept = append(kept, at)
			continue
		}
		at.release()
	}
	rq.atts = kept
}

// bodySum is the SHA-256 of the client's body, the request's identity in
// logs (docs/gateway.md#what-happens-to-a-request). Computed only when
// something is logged, once, on whichever goroutine logs first.
func (rq *request) bodySum() string {
	rq.sumOnce.Do(func() {
		s := sha256.Sum256(rq.body)
		rq.sum = hex.EncodeToString(s[:])
	})
	return rq.sum
}
