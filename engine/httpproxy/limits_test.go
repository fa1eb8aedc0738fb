package httpproxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// dialPost opens a raw connection to the fixture's front server and sends
// the headers of a POST announcing contentLength bytes, then the first
// bytes of its body.
func (f *fixture) dialPost(contentLength int, first string) net.Conn {
	f.t.Helper()
	c, err := net.Dial("tcp", f.front.Listener.Addr().String())
	if err != nil {
		f.t.Fatal(err)
	}
	_, err = io.WriteString(c, "POST "+Path+" HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: "+
		itoa(contentLength)+"\r\n\r\n"+first)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// readAnswer reads one response from c, and its body, within d.
func readAnswer(t *testing.T, c net.Conn, d time.Duration) (*http.Response, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read answer body: %v", err)
	}
	return resp, string(b)
}

// closedByPeer reports whether the server closes c within d (after the
// answer, if any, has been read): an end of the stream or a reset, not a
// timeout.
func closedByPeer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !errors.As(err, &ne) || !ne.Timeout()
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// heapInUse is the heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func errorCode(t *testing.T, body string) string {
	t.Helper()
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return e.Error.Code
}

// Clients that announce the largest body the gateway accepts and stall
// after a few bytes hold memory for what they sent, not for what they
// announced: a thousand of them, each announcing 32 MiB, add less than
// 64 MiB to the heap (they would pin 32 GiB if buffers were sized from
// Content-Length).
func TestStalledBodiesMemory(t *testing.T) {
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
`, nil)
	const n, bound = 1000, 64 << 20
	before, goroutines := heapInUse(), runtime.NumGoroutine()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		conns = append(conns, f.dialPost(DefaultMaxBodyBytes, `{"model":`))
	}
	waitFor(t, 30*time.Second, "not every connection is being read", func() bool { return f.h.reading.Load() == n })
	after := heapInUse()
	grew := int64(after) - int64(before)
	t.Logf("%d stalled bodies of 32 MiB announced: heap in use %.1f MiB → %.1f MiB (+%.1f MiB), %d → %d goroutines, %d body bytes held",
		n, mib(before), mib(after), float64(grew)/(1<<20), goroutines, runtime.NumGoroutine(), f.h.bodyMem.Load())
	if grew > bound {
		t.Errorf("the heap grew by %.1f MiB, over the bound of %d MiB", float64(grew)/(1<<20), bound>>20)
	}
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, 30*time.Second, "the handlers did not end with their connections", func() bool { return f.h.reading.Load() == 0 })
	waitFor(t, 5*time.Second, "body memory was not given back", func() bool { return f.h.bodyMem.Load() == 0 })
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// The bodies held at once are bounded in total: a body that would take
// them past WithMaxBodyMemory is refused with 503 gateway_busy (and its
// connection closed), and the budget comes back when requests end.
func TestBodyMemoryBudget(t *testing.T) {
	const size = 1 << 20
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
`, nil, WithMaxBodyBytes(size), WithMaxBodyMemory(size*5/2))
	part := `{"model":"gpt-4o","pad":"` + strings.Repeat("x", 900<<10)
	a := f.dialPost(size, part)
	defer a.Close()
	b := f.dialPost(size, part)
	defer b.Close()
	// Each has doubled its buffer up to 1 MiB for its 900 KiB; the third
	// one's step from 512 KiB to 1 MiB would take the total to 3 MiB.
	waitFor(t, 10*time.Second, "the two bodies are not held", func() bool { return f.h.bodyMem.Load() == 2*size })
	c := f.dialPost(size, part)
	defer c.Close()
	resp, body := readAnswer(t, c, 10*time.Second)
	if resp.StatusCode != http.StatusServiceUnavailable || errorCode(t, body) != "gateway_busy" || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("a body past the budget: status %d, Retry-After %q: %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if !closedByPeer(c, 10*time.Second) {
		t.Error("the refused connection was kept open")
	}
	a.Close()
	waitFor(t, 10*time.Second, "a's body was not given back", func() bool { return f.h.bodyMem.Load() == size })
	if resp, body := f.call(chatBody("gpt-4o")); resp.StatusCode != 200 {
		t.Errorf("a request within the budget again: status %d: %s", resp.StatusCode, body)
	}
	b.Close()
	waitFor(t, 10*time.Second, "body memory was not given back", func() bool { return f.h.bodyMem.Load() == 0 })
}

// A client that sends its body one byte at a time is cut at the body
// read deadline with 408 and its connection closed; the deadline does not
// outlive the body (a request whose answer takes longer is answered).
func TestBodyReadTimeout(t *testing.T) {
	const d = 300 * time.Millisecond
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
`, map[string][]reply{gpt: {delayed(2*d, okJSON("gpt-4o"))}}, WithBodyReadTimeout(d))
	body := chatBody("gpt-4o")
	c := f.dialPost(len(body), body[:1])
	defer c.Close()
	start := time.Now()
	stopTrickle := make(chan struct{})
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		tick := time.NewTicker(d / 10)
		defer tick.Stop()
		for i := 1; i < len(body); i++ {
			select {
			case <-tick.C:
			case <-stopTrickle:
				return
			}
			if _, err := io.WriteString(c, body[i:i+1]); err != nil {
				return
			}
		}
	}()
	resp, answer := readAnswer(t, c, 10*time.Second)
	took := time.Since(start)
	close(stopTrickle)
	<-trickled
	if resp.StatusCode != http.StatusRequestTimeout || errorCode(t, answer) != "request_timeout" {
		t.Errorf("a trickled body: status %d: %s", resp.StatusCode, answer)
	}
	if took < d || took > d+5*time.Second {
		t.Errorf("answered after %v; the deadline is %v", took, d)
	}
	if !closedByPeer(c, 10*time.Second) {
		t.Error("the connection was kept open after 408")
	}
	// The upstream answers after twice the deadline: the body was read in
	// time, so the request must not be cancelled by the deadline.
	if resp, answer := f.call(body); resp.StatusCode != 200 {
		t.Errorf("an answer later than the body deadline: status %d: %s", resp.StatusCode, answer)
	}
	f.wantCalls(map[string]int{gpt: 1})
}

// A model name longer than MaxModelBytes is refused before any lookup,
// naming the limit; what an error message repeats of a client's value is
// cut to maxEcho bytes, so an answer never grows with the request.
func TestLongModelNames(t *testing.T) {
	t.Parallel()
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
`, nil)
	tests := []struct {
		name, body, path string
		status           int
		code             string
	}{
		{name: "over the model limit", body: chatBody(strings.Repeat("m", MaxModelBytes+1)), status: 400, code: "model_too_long"},
		{name: "a 30 MiB model", body: chatBody(strings.Repeat("m", 30<<20)), status: 400, code: "model_too_long"},
		{name: "unknown, at the model limit", body: chatBody(strings.Repeat("m", MaxModelBytes)), status: 404, code: "model_not_found"},
		{name: "unknown, multi-byte characters at the cut", body: chatBody("x" + strings.Repeat("é", 400)), status: 404, code: "model_not_found"},
		{name: "a long path", path: "/" + strings.Repeat("p", 8000), body: chatBody("gpt-4o"), status: 404, code: "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := f.request(tt.body)
			if tt.path != "" {
				req.URL.Path = tt.path
			}
			resp, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e struct {
				Error struct{ Message, Code string } `json:"error"`
			}
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("body %.200q: %v", b, err)
			}
			if resp.StatusCode != tt.status || e.Error.Code != tt.code {
				t.Errorf("status %d, code %q; want %d %s", resp.StatusCode, e.Error.Code, tt.status, tt.code)
			}
			// The message repeats at most maxEcho bytes of the value
			// (quoted, so at most 6 bytes each), and its length.
			if len(e.Error.Message) > 200+6*maxEcho || !utf8.ValidString(e.Error.Message) {
				t.Errorf("a %d-byte message: %.300s", len(e.Error.Message), e.Error.Message)
			}
			if tt.code == "model_too_long" && !strings.Contains(e.Error.Message, "at most 1024 bytes") {
				t.Errorf("the message does not name the limit: %s", e.Error.Message)
			}
			if tt.status == 404 && !strings.Contains(e.Error.Message, "… (") {
				t.Errorf("no ellipsis in %s", e.Error.Message)
			}
		})
	}
	f.wantCalls(map[string]int{gpt: 0})
}

func TestEcho(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"gpt-4o", `"gpt-4o"`},
		{strings.Repeat("a", maxEcho), `"` + strings.Repeat("a", maxEcho) + `"`},
		{strings.Repeat("a", maxEcho+1), `"` + strings.Repeat("a", maxEcho) + `"… (257 bytes)`},
		{strings.Repeat("a", maxEcho-1) + "é", `"` + strings.Repeat("a", maxEcho-1) + `"… (257 bytes)`},
	} {
		if got := echo(tt.in); got != tt.want {
			t.Errorf("echo(%d bytes) = %s, want %s", len(tt.in), got, tt.want)
		}
	}
}

// An answer that is not a stream is buffered up to WithMaxResponseBytes;
// past it the rest is relayed after commit, and the buffer is dropped
// once written: concurrent large answers being relayed hold little heap,
// and nothing is kept once they have ended.
func TestResponseBufferReleased(t *testing.T) {
	const limit, n = 4 << 20, 8
	gate := make(chan struct{})
	// head, sent before the gate, is the buffered part and 64 KiB more;
	// tail comes once the test has measured.
	head := `{"id":"chatcmpl-1","model":"gpt-4o","pad":"` + strings.Repeat("x", limit) + strings.Repeat("y", 64<<10)
	tail := strings.Repeat("z", 1<<20) + `"}`
	sent := make(chan struct{}, n)
	big := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", itoa(len(head)+len(tail)))
		io.WriteString(w, head)
		w.(http.Flusher).Flush()
		sent <- struct{}{}
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, tail)
	}
	f := newFixture(t, `
model_providers:
  - model: openai/gpt-4o
`, map[string][]reply{gpt: {big}}, WithMaxResponseBytes(limit))
	before := heapInUse()
	type got struct {
		n   int
		err error
	}
	results := make(chan got, n)
	relaying := make(chan struct{}, n)
	for range n {
		go func() {
			resp, err := f.client.Do(f.request(chatBody("gpt-4o")))
			if err != nil {
				results <- got{err: err}
				return
			}
			defer resp.Body.Close()
			// The client has the buffered part and 16 KiB that only the
			// relay's loop writes (more than the server's write
			// buffers hold): the relay is past the buffered part.
			b := make([]byte, limit+1+16<<10)
			k, err := io.ReadFull(resp.Body, b)
			relaying <- struct{}{}
			if err != nil {
				results <- got{k, err}
				return
			}
			rest, err := io.ReadAll(resp.Body)
			results <- got{k + len(rest), err}
		}()
	}
	for range n {
		<-sent
		<-relaying
	}
	during := heapInUse()
	close(gate)
	for range n {
		if r := <-results; r.err != nil || r.n != len(head)+len(tail) {
			t.Errorf("an answer: %d bytes, %v; want %d", r.n, r.err, len(head)+len(tail))
		}
	}
	f.client.CloseIdleConnections()
	after := heapInUse()
	t.Logf("%d answers of %d MiB, %d MiB buffered each: heap in use %.1f MiB before, %.1f MiB while relaying, %.1f MiB after",
		n, (len(head)+len(tail))>>20, limit>>20, mib(before), mib(during), mib(after))
	// Holding the buffers while relaying would be n × 4 MiB.
	if grew := int64(during) - int64(before); grew > n*limit/2 {
		t.Errorf("while relaying, the heap grew by %.1f MiB: the buffers are held", float64(grew)/(1<<20))
	}
	if grew := int64(after) - int64(before); grew > 8<<20 {
		t.Errorf("after the answers, the heap is %.1f MiB larger: something is kept", float64(grew)/(1<<20))
	}
}
