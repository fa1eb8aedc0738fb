package httpproxy

import (
	"bytes"
	"compress/gzip"
	"net"
	"net/http"
	"strconv"
	"testing"
)

// A request that is not a stream commits nothing until its answer is read
// whole, so an answer cut mid-way is simply retried: the client gets the
// fallback's complete answer. Each upstream here is a real loopback
// server that writes its status line, headers and half of a JSON body
// itself, then closes the connection, in every framing an upstream may
// use.
func TestHalfBodyThenCloseFailsOver(t *testing.T) {
	t.Parallel()
	body := completion("gpt-4o")
	half := body[:len(body)/2]
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(body))
	zw.Close()
	halfGzip := gz.String()[:gz.Len()/2]
	tests := []struct {
		name  string
		head  string // status line and headers, without the blank line
		sent  string // the bytes of the body sent before the close
		reset bool   // close with a TCP reset instead of a FIN
	}{
		{"content-length, closed", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)), half, false},
		{"content-length, reset", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)), half, true},
		{"chunked, closed inside a chunk", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked", strconv.FormatInt(int64(len(body)), 16) + "\r\n" + half, false},
		{"chunked, closed between chunks", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked", strconv.FormatInt(int64(len(half)), 16) + "\r\n" + half + "\r\n", false},
		{"close-delimited", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close", half, false},
		{"close-delimited, with a charset", "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close", half, false},
		{"close-delimited, HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Type: application/json", half, false},
		{"close-delimited, no content type", "HTTP/1.1 200 OK\r\nConnection: close", half, false},
		{"close-delimited, gzip", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nConnection: close", halfGzip, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cutAfter := func(w http.ResponseWriter, r *http.Request) {
				conn, buf, err := http.NewResponseController(w).Hijack()
				if err != nil {
					panic(err)
				}
				buf.WriteString(tt.head + "\r\n\r\n" + tt.sent)
				buf.Flush()
				if tc, ok := conn.(*net.TCPConn); ok && tt.reset {
					tc.SetLinger(0)
				}
				conn.Close()
			}
			f := newFixture(t, twoTargets(timeoutPolicy), map[string][]reply{gpt: {cutAfter}})
			resp, answer := f.call(chatBody("gpt-4o"))
			if resp.StatusCode != 200 || resp.Header.Get("X-Reroute-Target") != claude || answer != completion("claude-3-5-sonnet") {
				t.Errorf("status %d, target %q, body %q; want the fallback's whole answer", resp.StatusCode, resp.Header.Get("X-Reroute-Target"), answer)
			}
			if resp.Header.Get("X-Reroute-Attempts") != "2" {
				t.Errorf("x-reroute-attempts %q, want 2", resp.Header.Get("X-Reroute-Attempts"))
			}
			f.wantCalls(map[string]int{gpt: 1, claude: 1})
		})
	}
}
