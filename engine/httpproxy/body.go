package httpproxy

import "io"

// readUpTo reads r to its end, or until it has read more than limit bytes:
// more then reports that r holds more than limit bytes, and buf holds the
// limit+1 bytes read. sizeHint, when
// ≥ 0, is the length r announced (a Content-Length): the buffer is sized
// to see the end without growing. progress, when not nil, is called after
// every read that returned bytes; an attempt re-arms its idle timer there.
// On a read error buf is nil.
//
// It is the one body reader of the package: the client's body and an
// upstream's body that is not a stream are read the same way.
func readUpTo(r io.Reader, sizeHint, limit int64, progress func()) (buf []byte, more bool, err error) {
	size := int64(512)
	if sizeHint >= 0 {
		size = min(sizeHint, limit) + 1 // room to see the end, or the byte past limit
	}
	buf = make([]byte, 0, size)
	for {
		if int64(len(buf)) > limit {
			return buf, true, nil
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, rerr := r.Read(buf[len(buf):min(int64(cap(buf)), limit+1)])
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
