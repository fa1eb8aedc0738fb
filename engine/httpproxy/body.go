package httpproxy

import (
	"errors"
	"io"
)

// errNoMemory is a read stopped because reserve refused to let its buffer
// grow.
var errNoMemory = errors.New("reroute/httpproxy: body memory budget exhausted")

// firstBuffer is the largest buffer readUpTo allocates before any byte has
// arrived.
const firstBuffer = 4 << 10

// readUpTo reads r to its end, or until it has read more than limit bytes:
// more then reports that r holds more than limit bytes, and buf holds the
// limit+1 bytes read. progress, when not nil, is called after every read
// that returned bytes; an attempt re-arms its idle timer there. On a read
// error buf is nil.
//
// The buffer grows with what arrives, never ahead of it: it starts at
// most firstBuffer bytes and at most doubles when it is full, so that it is
// never more than about twice the bytes read. sizeHint, when ≥ 0, is the
// length r announced (a Content-Length); it only caps the growth, so that
// a body that keeps its word ends in a buffer of its size plus the byte
// that sees the end, with no copy past it. A peer that announces 32 MiB and
// sends 10 bytes costs a few kilobytes, not 32 MiB.
//
// reserve, when not nil, is asked before every growth of the buffer for
// the bytes it adds (the first buffer included); when it refuses, the read
// stops with errNoMemory. The caller returns what it granted.
//
// It is the one body reader of the package: the client's body and an
// upstream's body that is not a stream are read the same way.
func readUpTo(r io.Reader, sizeHint, limit int64, progress func(), reserve func(n int64) bool) (buf []byte, more bool, err error) {
	end := limit + 1 // room to see the end, or the byte past limit
	if sizeHint >= 0 && sizeHint < limit {
		end = sizeHint + 1
	}
	for {
		if int64(len(buf)) > limit {
			return buf, true, nil
		}
		if len(buf) == cap(buf) {
			grown := int64(2 * cap(buf))
			switch {
			case grown == 0:
				grown = firstBuffer
			case int64(len(buf)) >= end:
				// The peer sent more than it announced: grow on
				// towards the limit.
				end = limit + 1
			}
			grown = min(grown, end)
			if reserve != nil && !reserve(grown-int64(cap(buf))) {
				return nil, false, errNoMemory
			}
			nb := make([]byte, len(buf), grown)
			copy(nb, buf)
			buf = nb
		}
		n, rerr := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case rerr == io.EOF:
			return buf, false, nil
		case rerr != nil:
			return nil, false, rerr
		}
		if n > 0 && progress != nil {
			progress()
		}
	}
}
