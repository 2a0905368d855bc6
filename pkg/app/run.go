package app

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tdsgate/tdsgate/pkg/config"
)

// NewLogger builds the process logger from the config.
func NewLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.SlogLevel()}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h).With("instance", cfg.InstanceID)
}

// Run serves cfg until SIGTERM or SIGINT, reloading on SIGHUP with
// reload (nil: no reload). It returns after the drain.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, reload func() (*config.Config, error)) error {
	a, err := New(cfg, log)
	if err != nil {
		return err
	}
	a.SetReloader(reload)
	if err := a.Start(ctx); err != nil {
		return err
	}
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sig)
	for {
		select {
		case <-ctx.Done():
			return a.Shutdown(context.Background())
		case s := <-sig:
			if s == syscall.SIGHUP {
				a.ReloadFile("SIGHUP") // logs its outcome
				continue
			}
			log.Info("signal: shutting down", "signal", s.String())
			return a.Shutdown(context.Background())
		}
	}
}
