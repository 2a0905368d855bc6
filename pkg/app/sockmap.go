package app

import (
	"log/slog"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/ebpf"
)

// sockmapRelay is the kernel relay of relay: sockmap.
type sockmapRelay = *ebpf.Sockmap

// startSockmap loads the sockmap relay when the config asks for it and
// hands it to the frontend. Where it cannot load, ebpf.NewSockmap logs one
// warning and plaintext sessions are relayed with splice.
func (a *App) startSockmap(cfg *config.Config) {
	if cfg.Relay != config.RelaySockmap {
		return
	}
	m := openSockmap(a.log)
	if m == nil {
		return
	}
	a.sockmap = m
	a.handler.SetKernelRelay(m)
}

// openSockmap opens the kernel relay with ebpf.DefaultSockmapSessions
// (tests replace it: a program that cannot load, a map that fills).
var openSockmap = func(log *slog.Logger) *ebpf.Sockmap { return ebpf.NewSockmap(0, log) }

// stopSockmap frees the program and its map, once no session uses them.
func (a *App) stopSockmap() {
	if a.sockmap != nil {
		a.sockmap.Close()
	}
}

// Sockmap is the kernel relay, nil unless relay: sockmap loaded.
func (a *App) Sockmap() *ebpf.Sockmap { return a.sockmap }
