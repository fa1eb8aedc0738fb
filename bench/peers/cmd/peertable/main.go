// Command peertable runs the peer benchmarks and prints ns/op, allocs/op and
// reroute's ratio to each peer.
package main

import (
	"fmt"
	"os"
	"testing"

	"github.com/reroute-go/reroute/bench/peers"
)

func main() {
	testing.Init()
	fmt.Printf("%-10s %-12s %12s %10s %14s\n", "workload", "library", "ns/op", "allocs/op", "vs reroute")
	for _, w := range peers.Workloads {
		var base float64
		for _, lib := range peers.Libraries {
			r := testing.Benchmark(peers.Bench(lib, w))
			if r.N == 0 {
				fmt.Fprintf(os.Stderr, "peertable: %s/%s failed\n", w, lib)
				os.Exit(1)
			}
			ns := float64(r.T.Nanoseconds()) / float64(r.N)
			ratio := "1.00x"
			if lib == "reroute" {
				base = ns
			} else if base > 0 {
				ratio = fmt.Sprintf("%.2fx slower", ns/base)
			}
			fmt.Printf("%-10s %-12s %12.1f %10d %14s\n", w, lib, ns, r.AllocsPerOp(), ratio)
		}
	}
}
