//go:build race

package bench

// raceEnabled is true under the race detector, which makes tdsgate and the
// stand-in (both in the test process) several times slower:
// TestMultiplexShort then runs fewer sessions.
const raceEnabled = true
