// Package bench holds tdsgate's benchmarks: Go Benchmark* functions for
// the data path (run them with `go test -bench . ./bench/`), and — with the
// benchmark issue — the load generator and report behind `make bench`.
// Speed goals live here, never in timed unit tests.
package bench
