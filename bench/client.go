package bench

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/reroute-go/reroute/engine"
)

// load sends the workload: a closed loop of Concurrency workers, or
// Poisson arrivals at Rate, each request in its own goroutine.
func (h *httpRun) load(ctx context.Context) {
	var wg sync.WaitGroup
	w := h.sc.Workload
	if w.Concurrency > 0 {
		for range min(int64(w.Concurrency), h.total) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil && h.issued.Add(1) <= h.total {
					h.request(ctx)
				}
			}()
		}
		wg.Wait()
		h.issued.Store(min(h.issued.Load(), h.total))
		return
	}
	rng := rand.New(rand.NewPCG(h.o.seed(h.sc), 0x6172726976616c73))
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := int64(0); i < h.total && ctx.Err() == nil; i++ {
		if d := time.Until(next); d > time.Millisecond {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
		}
		h.issued.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.request(ctx)
		}()
		next = next.Add(time.Duration(rng.ExpFloat64() / w.Rate * float64(time.Second)))
	}
	wg.Wait()
}

// request sends one request and records how it ended.
func (h *httpRun) request(ctx context.Context) {
	t0 := time.Now()
	h.mu.Lock()
	h.rec.arrival(int64(t0.Sub(h.start)))
	h.mu.Unlock()
	target, reason := -1, ""
	if h.naive {
		target, reason = h.naiveRequest(ctx)
	} else {
		target, reason = h.send(ctx, h.gatewayURL, true)
	}
	end := time.Now()
	h.mu.Lock()
	if target >= 0 {
		h.rec.success(int64(t0.Sub(h.start)), int64(end.Sub(h.start)), target)
		h.ok.Add(1)
	} else {
		h.rec.failure(int64(t0.Sub(h.start)), int64(end.Sub(h.start)), reason)
	}
	h.mu.Unlock()
	h.done.Add(1)
}

// naiveRequest is a baseline's client over HTTP (baselineChain has the
// rule): each target of the chain in turn, up to naiveMaxAttempts times
// each, at once, whatever it answered, straight to its upstream server.
func (h *httpRun) naiveRequest(ctx context.Context) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, h.sc.Workload.Timeout)
	defer cancel()
	for i, t := range h.chain {
		for range naiveMaxAttempts {
			actx, acancel := ctx, context.CancelFunc(func() {})
			if to := h.engine.AttemptTimeout(t); to > 0 {
				actx, acancel = context.WithTimeout(ctx, to)
			}
			served, r := h.send(actx, h.chainURLs[i], false)
			acancel()
			if served >= 0 {
				return t, ""
			}
			if ctx.Err() != nil {
				return -1, string(engine.ReasonDeadline)
			}
			if r2, ok := passThrough(r); ok {
				return -1, r2
			}
		}
	}
	return -1, string(engine.ReasonMaxAttempts)
}

// passThrough reports an answer the naive client delivers as it is (1xx
// and 3xx are not failures it retries).
func passThrough(reason string) (string, bool) {
	if len(reason) == len("upstream_000") && reason[:9] == "upstream_" && (reason[9] == '1' || reason[9] == '3') {
		return reason, true
	}
	return "", false
}

var doneMarker = []byte("data: [DONE]")

// send posts the request body to url and reads the whole answer. It
// returns the index of the target that served a 2xx answer, or -1 and why
// the request failed.
func (h *httpRun) send(ctx context.Context, url string, gateway bool) (int, string) {
	if gateway {
		// The gateway answers at its own deadline; this one only guards
		// against a gateway that does not.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.sc.Workload.Timeout+5*time.Second)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(h.body))
	if err != nil {
		return -1, "client_error"
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer loadgen")
	resp, err := h.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return -1, string(engine.ReasonDeadline)
		}
		return -1, "transport_error"
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case err != nil && errors.Is(err, context.DeadlineExceeded):
		return -1, string(engine.ReasonDeadline)
	case err != nil:
		return -1, "transport_error"
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		if h.sc.Workload.Stream && !bytes.Contains(body, doneMarker) {
			return -1, "stream_cut"
		}
		if !gateway {
			return 0, ""
		}
		t, ok := h.index[resp.Header.Get("X-Reroute-Target")]
		if !ok {
			return -1, "unknown_target"
		}
		return t, ""
	case gateway && bytes.Contains(body, []byte(`"retry_exhausted"`)):
		return -1, reasonExhausted
	case gateway && bytes.Contains(body, []byte(`"deadline_exceeded"`)):
		return -1, string(engine.ReasonDeadline)
	}
	return -1, h.rec.passThrough(resp.StatusCode)
}
