package health

import (
	"math/rand/v2"
	"testing"
)

// FuzzDifferential drives State and the naive reference model (blocks,
// latency events and passive health) with the operations encoded by the fuzz input and fails on the first answer where
// they differ (see differential).
func FuzzDifferential(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{2, 4, 1, 3, 1, 2, 2, 4, 1, 3, 1, 2, 2, 4, 1, 3, 1, 2, 4, 0, 39, 4})
	f.Add([]byte{1, 5, 20, 0, 20, 4, 0, 1, 4, 5})
	r := rand.New(rand.NewPCG(1, 2))
	for range 4 {
		b := make([]byte, 200)
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		f.Add(b)
	}
	c := withEjection(compiled(f, testConfig))
	f.Fuzz(func(t *testing.T, b []byte) {
		differential(t, c, &byteSource{b: b})
	})
}
