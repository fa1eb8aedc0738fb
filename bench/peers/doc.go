// Package peers measures reroute against other Go retry libraries on the
// same workloads, in the same run. It is a module of its own so that the
// peers never become dependencies of reroute.
//
//	cd bench/peers && go test -run '^$' -bench . -benchmem   # the raw rows
//	cd bench/peers && go run ./cmd/peertable                  # a table with ratios
//
// Workloads: "success" (the first attempt succeeds) and "fail-once" (the
// first attempt fails, the immediate retry succeeds). Neither waits: both
// libraries are configured with no delay between attempts, so the figures
// are the cost of the retry machinery itself.
package peers
