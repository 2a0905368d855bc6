package ebpf

import "errors"

// DefaultSockmapSessions is how many sessions the sockmap relay's map holds
// at once when OpenSockmap is given 0 (two entries each).
const DefaultSockmapSessions = 32768

// ErrSockmapFull is returned by Sockmap.Join when the map has no room for
// the session's two sockets.
var ErrSockmapFull = errors.New("sockmap relay: map full")
