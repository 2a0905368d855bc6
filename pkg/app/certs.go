package app

import (
	"fmt"

	"github.com/tdsgate/tdsgate/pkg/certutil"
	"github.com/tdsgate/tdsgate/pkg/config"
)

// certs is the client-facing certificate and the watch of its files.
type certs struct {
	r    *certutil.Reloader
	stop chan struct{}
	done chan struct{}
}

// loadCertificate sets up the certificate shown to clients: tls.cert_file
// and key_file; or the self-signed one kept at tls.self_signed_file
// (loaded if present, generated and written there otherwise); or one
// generated now.
func (a *App) loadCertificate(cfg *config.Config) error {
	t := cfg.TLS
	cn := "tdsgate " + cfg.InstanceID
	switch {
	case t.CertFile != "":
		cert, _, err := certutil.Load(t.CertFile, t.KeyFile, cn)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		a.certs.r = certutil.NewReloader(cert, t.CertFile, t.KeyFile)
		a.log.Info("tls: certificate loaded", "file", t.CertFile, "sha256_fingerprint", certutil.Fingerprint(cert))
	case t.SelfSignedFile != "":
		cert, created, err := certutil.LoadOrCreate(t.SelfSignedFile, cn)
		if err != nil {
			return fmt.Errorf("tls.self_signed_file: %w", err)
		}
		a.certs.r = certutil.NewReloader(cert, "", "")
		msg := "tls: self-signed certificate loaded"
		if created {
			msg = "tls: generated a self-signed certificate and kept it for the next starts"
		}
		a.log.Info(msg, "file", t.SelfSignedFile, "sha256_fingerprint", certutil.Fingerprint(cert))
	default:
		cert, err := certutil.SelfSigned(cn)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		a.certs.r = certutil.NewReloader(cert, "", "")
		a.log.Info("tls: no certificate configured, generated a self-signed one (set tls.self_signed_file to keep it across restarts)",
			"sha256_fingerprint", certutil.Fingerprint(cert))
	}
	return nil
}

// reloadCertificate, on SIGHUP: with tls.cert_file set, the pair is read
// again (at its new paths, if they changed) and new handshakes use it;
// sessions under way keep theirs. A pair that does not load fails the
// reload and the certificate in force stays. A generated certificate is
// kept (switching to or from one takes a restart).
func (a *App) reloadCertificate(cfg *config.Config) error {
	if cfg.TLS.CertFile == "" {
		return nil
	}
	changed, err := a.certs.r.Load(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if changed {
		a.log.Info("tls: certificate reloaded", "file", cfg.TLS.CertFile, "sha256_fingerprint", certutil.Fingerprint(a.certs.r.Certificate()))
	}
	return nil
}

// startCertWatch polls tls.cert_file and key_file every
// tls.watch_interval (read at start) and loads a changed pair.
func (a *App) startCertWatch(cfg *config.Config) {
	if cfg.TLS.CertFile == "" || cfg.TLS.WatchInterval <= 0 {
		return
	}
	a.certs.stop, a.certs.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(a.certs.done)
		a.certs.r.Watch(cfg.TLS.WatchInterval, a.certs.stop, func(changed bool, err error) {
			if err != nil {
				a.log.Error("tls: the certificate files changed but do not load; keeping the certificate in force", "file", cfg.TLS.CertFile, "err", err)
				return
			}
			a.log.Info("tls: certificate files changed, certificate reloaded", "file", cfg.TLS.CertFile,
				"sha256_fingerprint", certutil.Fingerprint(a.certs.r.Certificate()))
		})
	}()
}

func (a *App) stopCertWatch() {
	if a.certs.stop != nil {
		close(a.certs.stop)
		<-a.certs.done
		a.certs.stop = nil
	}
}
