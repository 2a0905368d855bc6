package app

import (
	"errors"
	"log/slog"
	"net"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/ebpf"
	"github.com/tdsgate/tdsgate/pkg/metrics"
	"github.com/tdsgate/tdsgate/pkg/relay"
)

// startHeaderWalker loads the kernel header walker when a bucket pools
// its backends by session and the config leaves header_walk at kernel, and hands it
// to the frontend. Where it cannot load, ebpf.NewTDSWalk logs one warning
// and the pooled relays peek.
func (a *App) startHeaderWalker(cfg *config.Config) {
	if cfg.HeaderWalk != config.HeaderWalkKernel || !anyPooled(cfg) {
		return
	}
	w := openHeaderWalker(a.log)
	if w == nil {
		return
	}
	a.walker = w
	a.handler.SetHeaderWalker(headerWalker{t: w, m: a.obs.metrics})
}

// openHeaderWalker opens the walker with ebpf.DefaultTDSWalkSessions
// (tests replace it).
var openHeaderWalker = func(log *slog.Logger) *ebpf.TDSWalk { return ebpf.NewTDSWalk(0, log) }

// stopHeaderWalker frees the program and its map, once no session uses
// them.
func (a *App) stopHeaderWalker() {
	if a.walker != nil {
		a.walker.Close()
	}
}

// anyPooled reports whether any bucket pools its backends by session, whose
// relay walks the server's headers (at start: a bucket a reload turns to
// session pooling peeks).
func anyPooled(cfg *config.Config) bool {
	for _, b := range cfg.Buckets {
		if b.PoolMode == config.PoolModeSession {
			return true
		}
	}
	return false
}

// kernelWalker is the loaded walker.
type kernelWalker = *ebpf.TDSWalk

// headerWalker is ebpf.TDSWalk as a relay.KernelWalker, counting walks
// in proxy_header_walks_total.
type headerWalker struct {
	t *ebpf.TDSWalk
	m *metrics.Metrics
}

func (h headerWalker) Arm(c *net.TCPConn) (relay.KernelWalk, error) {
	w, err := h.t.Arm(c)
	if err != nil {
		return nil, err
	}
	h.m.HeaderWalkArmed()
	return &headerWalk{w: w, m: h.m}, nil
}

type headerWalk struct {
	w       *ebpf.Walk
	m       *metrics.Metrics
	stopped bool
}

func (h *headerWalk) State() (relay.WalkState, error) {
	s, err := h.w.State()
	if errors.Is(err, ebpf.ErrWalkBusy) {
		err = relay.ErrWalkBusy
	}
	if err == nil && !s.Usable && !h.stopped {
		h.stopped = true
		h.m.HeaderWalkStopped()
	}
	return relay.WalkState(s), err
}

func (h *headerWalk) Close() { h.w.Close() }
