package bench

import (
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// fake is the loopback upstream of one target: it acts out the target's
// phases against the wall-clock time since the run started.
type fake struct {
	u      *Upstream
	t      int
	run    *httpRun
	stream bool
	busy   atomic.Int64 // attempts in progress, for Upstream.Capacity
}

// globalRand is math/rand/v2's goroutine-safe global source, for the
// fakes' draws: real time is not reproducible anyway.
type globalRand struct{}

func (globalRand) Uint64() uint64 { return rand.Uint64() }

var fakeRand = rand.New(globalRand{})

var (
	fakeOK     = []byte(`{"id":"chatcmpl-loadgen","object":"chat.completion","created":1700000000,"model":"loadgen","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, load generator."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}`)
	fakeChunk1 = []byte("data: {\"id\":\"chatcmpl-loadgen\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"loadgen\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hello,\"},\"finish_reason\":null}]}\n\n")
	fakeChunk2 = []byte("data: {\"id\":\"chatcmpl-loadgen\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"loadgen\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" load generator.\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
)

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	start := time.Now()
	off := start.Sub(f.run.start)
	f.run.mu.Lock()
	if !f.run.sealed {
		f.run.rec.attempt(int64(off), f.t)
	}
	f.run.mu.Unlock()
	n := f.busy.Add(1)
	defer f.busy.Add(-1)
	a := overloaded
	if c := f.u.Capacity; c == 0 || n <= int64(c) {
		a = f.u.answer(off, fakeRand)
	}
	if a.hang {
		select {
		case <-r.Context().Done():
		case <-f.run.stop:
		}
		return
	}
	if !f.sleepUntil(r, start.Add(a.ttfb)) {
		return
	}
	if a.reset {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // an RST, not a FIN
				}
				_ = conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	hd := w.Header()
	for k, v := range a.header {
		hd[k] = v
	}
	if a.status >= 300 {
		msg := []byte(`{"error":{"message":"loadgen: simulated ` + strconv.Itoa(a.status) + ` ` + http.StatusText(a.status) + `","type":"loadgen_simulated","param":null,"code":null}}`)
		hd.Set("Content-Type", "application/json")
		hd.Set("Content-Length", strconv.Itoa(len(msg)))
		w.WriteHeader(a.status)
		_, _ = w.Write(msg)
		return
	}
	fl, _ := w.(http.Flusher)
	if f.stream {
		hd.Set("Content-Type", "text/event-stream")
		hd.Set("Cache-Control", "no-cache")
		w.WriteHeader(a.status)
		_, _ = w.Write(fakeChunk1)
		if fl != nil {
			fl.Flush()
		}
		if !f.sleepUntil(r, start.Add(a.total)) {
			return
		}
		_, _ = w.Write(fakeChunk2)
		return
	}
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(fakeOK)))
	w.WriteHeader(a.status)
	if a.total > a.ttfb {
		if fl != nil {
			fl.Flush()
		}
		if !f.sleepUntil(r, start.Add(a.total)) {
			return
		}
	}
	_, _ = w.Write(fakeOK)
}

// sleepUntil waits until t, or until the client goes away or the run
// stops (false).
func (f *fake) sleepUntil(r *http.Request, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-r.Context().Done():
	case <-f.run.stop:
	}
	return false
}
