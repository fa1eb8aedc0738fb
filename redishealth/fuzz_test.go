package redishealth

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// FuzzDecodeMessage: decoding never panics; what it accepts is within
// every bound (so nothing unchecked reaches an actor), and survives a
// round trip through the encoder unchanged.
func FuzzDecodeMessage(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"r":"a","t":1,"f":[{"n":"openai/gpt-4o","k":"retry_after","d":1000000000}]}`,
		`{"v":1,"r":"a","t":1,"f":[{"n":"openai","p":true,"k":"ejected","d":5000000000,"e":2},{"n":"x/y","k":"recovered"}]}`,
		`{"v":1,"r":"a","t":1,"f":[{"n":"x/y","k":"latency","d":-1}]}`,
		`{"v":1,"r":"a","t":1,"f":[{"n":"x/y","k":"strike","d":1200000},{"n":"x","p":true,"k":"clear"}]}`,
		`{"v":1,"r":"a","t":1,"f":[{"n":"x/y","k":"strike","d":-5},{"n":"x/y","k":"clear","e":1}]}`,
		`{"v":1}`, `[]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, absurd, err := decodeMessage(b)
		if len(b) > maxMessage && !errors.Is(err, errOversized) {
			t.Fatalf("%d bytes accepted: %v", len(b), err)
		}
		if err != nil {
			if !errors.Is(err, errOversized) && !errors.Is(err, errMalformed) {
				t.Fatalf("error %v is neither oversized nor malformed", err)
			}
			return
		}
		if absurd < 0 || len(m.Facts)+absurd > maxBatch || m.V != wireVersion || m.R == "" || m.T <= 0 {
			t.Fatalf("accepted %+v with %d absurd", m, absurd)
		}
		for _, f := range m.Facts {
			if err := f.check(); err != nil {
				t.Fatalf("accepted fact %+v: %v", f, err)
			}
			switch {
			case f.event():
				if f.D < 0 || f.D > int64(maxAge) || f.E != 0 {
					t.Fatalf("accepted %s %v old with %d ejections", f.Kind, time.Duration(f.D), f.E)
				}
			case f.Kind != kindRecovered && (f.D <= 0 || f.D > int64(maxRemaining)):
				t.Fatalf("accepted duration %v", time.Duration(f.D))
			}
		}
		if len(m.Facts) == 0 {
			return
		}
		again, n, err := decodeMessage(encodeMessage(m.R, m.T, m.Facts))
		if err != nil || n != 0 {
			t.Fatalf("re-encoded message refused: %v (%d absurd)", err, n)
		}
		x, _ := json.Marshal(m)
		y, _ := json.Marshal(again)
		if !bytes.Equal(x, y) {
			t.Fatalf("round trip changed the message:\n%s\n%s", x, y)
		}
	})
}
