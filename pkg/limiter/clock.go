package limiter

import (
	"time"

	"github.com/tdsgate/tdsgate/pkg/clock"
)

// Clock is the limiter's time source (package clock): queue timeouts, the
// lease and the fence are measured with it. Inject one with WithClock.
type Clock = clock.Clock

// Timer is clock.Timer.
type Timer = clock.Timer

// RealClock is clock.Real, the default.
type RealClock = clock.Real

// FakeClock is clock.Fake: tests (here and in the frontend) drive 50004
// and the fence with it instead of sleeping.
type FakeClock = clock.Fake

// NewFakeClock returns a clock.Fake reading start.
func NewFakeClock(start time.Time) *FakeClock { return clock.NewFake(start) }
