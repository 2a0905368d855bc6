package app

import (
	"log/slog"

	"github.com/tdsgate/tdsgate/pkg/ebpf"
)

// SetOpenSockmap replaces how the next Apps open the sockmap relay, until
// the returned restore runs (tests of the fallbacks: a program that cannot
// load, a full map).
func SetOpenSockmap(f func(log *slog.Logger) *ebpf.Sockmap) (restore func()) {
	old := openSockmap
	openSockmap = f
	return func() { openSockmap = old }
}
