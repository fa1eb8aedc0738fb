package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const oneTarget = `
model_providers:
  - model: openai/gpt-4o
    base_url: %s/v1
    access_key: sk-test
`

func config(base string) string { return strings.Replace(oneTarget, "%s", base, 1) }

// rawPost sends the headers of a POST announcing contentLength bytes and
// the first bytes of its body on a new connection.
func rawPost(t *testing.T, url string, contentLength int, first string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\nContent-Length: "+
		strconv.Itoa(contentLength)+"\r\n\r\n"+first); err != nil {
		t.Fatal(err)
	}
	return c
}

// answeredAndClosed reads one response from c and then waits for the
// gateway to close c, all within d; it returns the status (0 if none).
func answeredAndClosed(c net.Conn, d time.Duration) (status int, closed bool) {
	c.SetReadDeadline(time.Now().Add(d))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_, err = io.Copy(io.Discard, br)
	var ne net.Error
	return resp.StatusCode, !errors.As(err, &ne) || !ne.Timeout()
}

// Clients that stall inside their bodies, and one that trickles a byte
// at a time, are all answered 408 at -body-read-timeout and their
// connections closed; the goroutines they held end.
func TestStalledBodiesAreCut(t *testing.T) {
	const n, deadline = 1000, 300 * time.Millisecond
	url, _, _ := gateway(t, config("http://127.0.0.1:1"), "-body-read-timeout", deadline.String())
	goroutines := runtime.NumGoroutine()
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = rawPost(t, url, 32<<20, `{"model":`)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	body := `{"model":"gpt-4o","messages":[]}`
	trickler := rawPost(t, url, len(body), body[:1])
	defer trickler.Close()
	start := time.Now()
	stopTrickle, trickled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(trickled)
		tick := time.NewTicker(deadline / 10)
		defer tick.Stop()
		for i := 1; i < len(body); i++ {
			select {
			case <-tick.C:
			case <-stopTrickle:
				return
			}
			if _, err := io.WriteString(trickler, body[i:i+1]); err != nil {
				return
			}
		}
	}()
	status, closed := answeredAndClosed(trickler, 10*time.Second)
	took := time.Since(start)
	close(stopTrickle)
	<-trickled
	if status != http.StatusRequestTimeout || !closed || took < deadline {
		t.Errorf("the trickling client: status %d after %v, closed %v; want 408 after %v, closed", status, took, closed, deadline)
	}
	peak := runtime.NumGoroutine()
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := map[string]int{}
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, closed := answeredAndClosed(c, 20*time.Second)
			if status != http.StatusRequestTimeout || !closed {
				mu.Lock()
				bad["status "+strconv.Itoa(status)+", closed "+strconv.FormatBool(closed)]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("of %d stalled clients, not answered 408 and closed: %v", n, bad)
	}
	deadlineAt := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutines+10 {
		if time.Now().After(deadlineAt) {
			t.Fatalf("%d goroutines ten seconds after the stalled clients were cut, %d before them", runtime.NumGoroutine(), goroutines)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("%d stalled clients and a trickling one, cut after %v: goroutines %d before, %d while stalled, %d after",
		n, took.Round(time.Millisecond), goroutines, peak, runtime.NumGoroutine())
}

// -max-response-bytes bounds what is buffered of an answer that is not a
// stream: within it the gateway delivers it whole with a content-length;
// past it the rest is relayed as it comes (here: chunked, as the upstream
// sent no length).
func TestMaxResponseBytesFlag(t *testing.T) {
	big := `{"id":"chatcmpl-1","object":"chat.completion","pad":"` + strings.Repeat("x", 4096) + `"}`
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.(http.Flusher).Flush() // no content-length
		io.WriteString(w, big)
	})
	for _, tt := range []struct {
		flag   []string
		length int64
	}{
		{nil, int64(len(big))},
		{[]string{"-max-response-bytes", "1024"}, -1},
	} {
		url, _, _ := gateway(t, config(up.URL), tt.flag...)
		resp, body := post(t, url, `{"model":"gpt-4o","messages":[]}`)
		if resp.StatusCode != 200 || body != big || resp.ContentLength != tt.length {
			t.Errorf("%v: status %d, content-length %d, %d bytes; want the whole body with content-length %d", tt.flag, resp.StatusCode, resp.ContentLength, len(body), tt.length)
		}
	}
}

// -log-level debug logs every failed attempt: a burst of them, far more
// than zap's sampler lets through in a second, gives one line each.
func TestDebugLogsEveryFailedAttempt(t *testing.T) {
	const n, workers = 400, 8
	up := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(400)
		io.WriteString(w, `{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}`)
	})
	url, stop, logs := gateway(t, config(up.URL), "-log-level", "debug")
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	jobs := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				resp, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"gpt-4o","messages":[]}`))
				if err != nil {
					t.Error(err)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	took := time.Since(start)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	lines := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		var e struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "reroute upstream attempt failed" {
			lines++
		}
	}
	t.Logf("%d failed attempts in %v: %d debug lines", n, took.Round(time.Millisecond), lines)
	if lines != n {
		t.Errorf("%d failed attempts logged %d lines", n, lines)
	}
}
