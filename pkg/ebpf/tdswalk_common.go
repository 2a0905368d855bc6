package ebpf

import "errors"

// DefaultTDSWalkSessions is how many walks the kernel header walker's map
// holds at once when OpenTDSWalk is given 0.
const DefaultTDSWalkSessions = 32768

// ErrWalkBusy is what Walk.State returns when the kernel kept writing the
// walk while it was read.
var ErrWalkBusy = errors.New("header walker: no stable copy of the walk")

// WalkState is a walk after the first Bytes bytes its socket received
// since Arm; Usable says whether it may be trusted (it has begun, and
// neither found a gap nor refused a header). The rest is the walker's
// state there: HN header bytes gathered of the current packet (HVal, the
// first highest; 0 at a boundary, 8 in a body), Left body bytes to come,
// Packets and EOMs ended, Mid when the last packet ended had no EOM.
// Its fields are those of relay.WalkState.
type WalkState struct {
	Usable  bool
	Bytes   uint64
	Packets uint64
	EOMs    uint64
	HVal    uint64
	HN      int
	Left    int
	Mid     bool
}
