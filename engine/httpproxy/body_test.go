package httpproxy

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"testing/iotest"
)

// readUpTo returns the whole body up to the limit, and reports more only
// for a body longer than the limit, whatever the size hint says.
func TestReadUpTo(t *testing.T) {
	const limit = 1000
	for _, size := range []int{0, 1, 511, 512, 513, limit - 1, limit, limit + 1, 3 * limit} {
		for _, hint := range []int64{-1, 0, int64(size), int64(size) + 7, 2 * limit} {
			body := strings.Repeat("x", size)
			reads := 0
			// OneByteReader: every byte is its own read, and progress is
			// called for each.
			buf, more, err := readUpTo(iotest.OneByteReader(strings.NewReader(body)), hint, limit, func() { reads++ }, nil)
			if err != nil {
				t.Fatalf("size %d hint %d: %v", size, hint, err)
			}
			if wantMore := size > limit; more != wantMore {
				t.Errorf("size %d hint %d: more = %v", size, hint, more)
			}
			if want := body[:min(size, limit+1)]; !bytes.Equal(buf, []byte(want)) {
				t.Errorf("size %d hint %d: read %d bytes, want %d", size, hint, len(buf), len(want))
			}
			if reads != len(buf) {
				t.Errorf("size %d hint %d: progress called %d times for %d bytes", size, hint, reads, len(buf))
			}
		}
	}
	boom := errors.New("boom")
	if buf, more, err := readUpTo(iotest.ErrReader(boom), -1, limit, nil, nil); buf != nil || more || !errors.Is(err, boom) {
		t.Errorf("read error: %q, %v, %v", buf, more, err)
	}
}
