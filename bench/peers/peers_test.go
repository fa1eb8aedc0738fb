package peers

import "testing"

func BenchmarkPeers(b *testing.B) {
	for _, w := range Workloads {
		for _, lib := range Libraries {
			b.Run(w+"/"+lib, Bench(lib, w))
		}
	}
}
