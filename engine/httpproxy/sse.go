package httpproxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// eventKind is what one SSE event of a chat completion stream is.
type eventKind uint8

const (
	// evData is a chunk: data whose payload is a JSON object.
	evData eventKind = iota
	// evNoise is a block of comments, or a ping event: relayed to the
	// client, but it is not a token, so it neither ends the first-token
	// wait nor resets the idle timer (docs/gateway.md#timeouts).
	evNoise
	// evDone is "data: [DONE]", the end of an OpenAI-style stream.
	evDone
	// evError is an error reported inside the stream: data with a
	// top-level "error" object, or an event named "error".
	evError
)

// MaxEventBytes bounds one SSE event of an upstream stream, and so each of
// its lines: 16 MiB. A chunk carrying a base64 image can be megabytes
// long; an endless line or event is a broken upstream. A longer one fails
// the stream with ErrStreamTooLarge.
const MaxEventBytes = 16 << 20

// MaxMalformedEvents is how many malformed events (a data payload that is
// not JSON, a line that is not an SSE field) a stream may carry after
// commit: each is skipped, not relayed, and the stream goes on; the next
// one ends it with the in-band upstream_stream_malformed event. The bound
// is on the damage, not on a proportion: a skipped event is a chunk the
// client never sees, so a stream missing more than a few is no longer the
// answer the upstream meant, however long it is
// (docs/gateway.md#tolerated-stream-oddities).
const MaxMalformedEvents = 8

// tooLargeError is a stream that exceeded one of the handler's bounds.
type tooLargeError struct{ what string }

func (e *tooLargeError) Error() string { return "upstream stream too large: " + e.what }

// malformedError is a stream that does not follow the SSE grammar or
// whose data is not JSON.
type malformedError struct{ what string }

func (e *malformedError) Error() string { return "malformed SSE stream: " + e.what }

var (
	doneData = []byte("[DONE]")
	errorKey = []byte(`"error"`)
)

// sseReader splits an upstream SSE body into events, keeping each event's
// raw bytes so that it is relayed exactly as the upstream sent it. It is
// not safe for concurrent use.
type sseReader struct {
	br   *bufio.Reader
	ev   []byte // raw bytes of the current event; valid until the next call
	data []byte // its data lines joined with "\n"
	line []byte // a line longer than the bufio buffer, assembled
	// rest: the last call returned a malformed line before the end of its
	// event; the next call discards the rest of that event first, so that
	// a caller that skips malformed events resumes at the next one.
	rest bool
}

// next reads one event. raw is valid until the next call; data is the
// joined payload. At a clean end of the body it returns io.EOF; a body cut
// inside an event gives io.ErrUnexpectedEOF; a grammar violation a
// *malformedError, after which the next call goes on with the following
// event (a line that is not a field makes the rest of its event, up to its
// blank line, part of the malformed one). "data: [DONE]" is accepted
// without its closing blank line.
func (r *sseReader) next() (kind eventKind, raw, data []byte, err error) {
	if r.rest {
		r.rest = false
		if err := r.discard(); err != nil {
			return 0, nil, nil, err
		}
	}
	r.ev, r.data = r.ev[:0], r.data[:0]
	var (
		fields, comments bool
		nData            int
		name             string
	)
	for {
		line, rerr := r.readLine()
		if rerr != nil && rerr != io.EOF {
			return 0, nil, nil, rerr
		}
		if len(r.ev)+len(line) > MaxEventBytes {
			return 0, nil, nil, &tooLargeError{"an event longer than 16 MiB"}
		}
		r.ev = append(r.ev, line...)
		content := trimEOL(line)
		switch {
		case len(content) == 0 && len(line) > 0:
			// A blank line ends an event.
			if fields {
				return r.dispatch(name, nData)
			}
			if comments {
				return evNoise, r.ev, nil, nil
			}
			// Blank lines before an event: keep them with it.
			continue
		case len(content) > 0 && content[0] == ':':
			comments = true
		case len(content) > 0:
			field, value, _ := bytes.Cut(content, []byte{':'})
			value = bytes.TrimPrefix(value, []byte{' '})
			switch string(field) {
			case "data":
				if nData > 0 {
					r.data = append(r.data, '\n')
				}
				r.data = append(r.data, value...)
				nData++
			case "event":
				name = string(value)
			case "id", "retry":
			default:
				r.rest = rerr == nil
				return 0, nil, nil, &malformedError{"a line that is not an SSE field"}
			}
			fields = true
		}
		if rerr == io.EOF {
			if nData == 1 && name == "" && bytes.Equal(r.data, doneData) {
				if !bytes.HasSuffix(r.ev, []byte("\n\n")) {
					r.ev = append(bytes.TrimRight(r.ev, "\r\n"), '\n', '\n')
				}
				return evDone, r.ev, r.data, nil
			}
			if fields {
				return 0, nil, nil, io.ErrUnexpectedEOF
			}
			return 0, nil, nil, io.EOF
		}
	}
}

func (r *sseReader) dispatch(name string, nData int) (eventKind, []byte, []byte, error) {
	switch {
	case name == "ping":
		return evNoise, r.ev, r.data, nil
	case name == "error":
		// Named an error by the upstream: an error whatever its payload
		// holds, never a malformed event to skip.
		return evError, r.ev, r.data, nil
	case nData == 0:
		// id or retry alone: no payload to deliver, not a token.
		return evNoise, r.ev, r.data, nil
	case bytes.Equal(r.data, doneData):
		return evDone, r.ev, r.data, nil
	}
	if !json.Valid(r.data) {
		return 0, nil, nil, &malformedError{"data that is not JSON"}
	}
	if hasErrorMember(r.data) {
		return evError, r.ev, r.data, nil
	}
	return evData, r.ev, r.data, nil
}

// hasErrorMember reports whether a JSON payload is an object with a
// non-null top-level "error" member, the OpenAI-compatible way of failing
// inside a stream.
func hasErrorMember(data []byte) bool {
	if !bytes.Contains(data, errorKey) {
		return false
	}
	var buf [1]member
	ms, ok := findKey(data, "error", buf[:0])
	if !ok {
		return false
	}
	for _, m := range ms {
		if string(data[m.valStart:m.valEnd]) != "null" {
			return true
		}
	}
	return false
}

// discard reads up to the blank line that ends the current event, or to a
// clean end of the body (io.EOF), holding nothing. Like an event it is
// bounded: more than MaxEventBytes without a blank line is too large.
func (r *sseReader) discard() error {
	n := 0
	for {
		line, err := r.readLine()
		if err != nil && err != io.EOF {
			return err
		}
		if n += len(line); n > MaxEventBytes {
			return &tooLargeError{"an event longer than 16 MiB"}
		}
		if err == io.EOF {
			return io.EOF
		}
		if len(trimEOL(line)) == 0 {
			return nil
		}
	}
}

// trimEOL drops the line's terminator (LF or CRLF, and any run of them).
// It is bytes.TrimRight(line, "\r\n") without building a cutset for every
// line of every event.
func trimEOL(line []byte) []byte {
	n := len(line)
	for n > 0 && (line[n-1] == '\n' || line[n-1] == '\r') {
		n--
	}
	return line[:n]
}

// readLine returns the next line with its terminator, or the final
// unterminated bytes with io.EOF. The slice is valid until the next call.
func (r *sseReader) readLine() ([]byte, error) {
	line, err := r.br.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		return line, err
	}
	r.line = append(r.line[:0], line...)
	for {
		line, err = r.br.ReadSlice('\n')
		r.line = append(r.line, line...)
		if len(r.line) > MaxEventBytes {
			return nil, &tooLargeError{"a line longer than 16 MiB"}
		}
		if err != bufio.ErrBufferFull {
			return r.line, err
		}
	}
}

// isMalformed reports whether err is a grammar violation of the stream.
func isMalformed(err error) bool {
	var m *malformedError
	return errors.As(err, &m)
}
