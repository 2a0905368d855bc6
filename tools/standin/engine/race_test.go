//go:build race

package engine

// raceEnabled is true when the tests run under the race detector, which makes
// SQLite (pure Go) 10-20x slower: tests that stream or insert many rows use
// smaller counts then. BenchmarkStream100k and a plain `go test` keep the
// full sizes.
const raceEnabled = true
