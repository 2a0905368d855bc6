// Command standin runs one or more SQL Server stand-ins from a YAML config:
//
//	go run ./tools/standin -config tools/standin/standin.example.yaml
//
// A stand-in speaks real TDS 7.4 (TLS included) and executes a subset of
// T-SQL on SQLite. It is not a SQL Server; see README.md.
package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"go.yaml.in/yaml/v3"

	"github.com/tdsgate/tdsgate/pkg/certutil"
	"github.com/tdsgate/tdsgate/tools/standin/server"
)

// fileConfig is the YAML file: a list of servers.
type fileConfig struct {
	Servers []server.Config `yaml:"servers"`
}

func main() {
	path := flag.String("config", "", "YAML file with a `servers:` list (empty: the runbook's three buckets on 14331-14333)")
	debug := flag.Bool("debug", false, "log every session")
	certFile := flag.String("cert", "", "PEM certificate for every server whose config names none (with -key)")
	keyFile := flag.String("key", "", "PEM private key of -cert")
	writeCert := flag.String("write-cert", "", "write a self-signed certificate for localhost/127.0.0.1/::1 as DIR/cert.pem and DIR/key.pem (kept if both exist), then exit")
	flag.Parse()
	if *writeCert != "" {
		if err := writeSelfSigned(*writeCert); err != nil {
			fmt.Fprintln(os.Stderr, "standin:", err)
			os.Exit(1)
		}
		return
	}
	if (*certFile == "") != (*keyFile == "") {
		fmt.Fprintln(os.Stderr, "standin: -cert and -key go together")
		os.Exit(2)
	}
	if err := run(*path, *debug, *certFile, *keyFile); err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		os.Exit(1)
	}
}

// writeSelfSigned writes DIR/cert.pem and DIR/key.pem: one self-signed
// certificate that clients can trust as a CA (the local stack gives it to
// every stand-in and proxy, so SSL_CERT_FILE=DIR/cert.pem verifies them all).
func writeSelfSigned(dir string) error {
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if _, err := os.Stat(certPath); err == nil {
		if _, err := os.Stat(keyPath); err == nil {
			return nil
		}
	}
	cert, err := certutil.SelfSigned("tdsgate local stack")
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644)
}

func run(path string, debug bool, certFile, keyFile string) error {
	level := slog.LevelWarn
	if debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var fc fileConfig
	if path == "" {
		for i := 1; i <= 3; i++ {
			fc.Servers = append(fc.Servers, server.RunbookConfig(i, fmt.Sprintf("127.0.0.1:%d", 14330+i)))
		}
	} else {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&fc); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if len(fc.Servers) == 0 {
			return fmt.Errorf("%s: no servers", path)
		}
	}
	var running []*server.Server
	defer func() {
		for _, s := range running {
			s.Close()
		}
	}()
	for _, c := range fc.Servers {
		if c.CertFile == "" && c.KeyFile == "" {
			c.CertFile, c.KeyFile = certFile, keyFile
		}
		s, err := server.Start(c, log)
		if err != nil {
			return err
		}
		running = append(running, s)
		fmt.Printf("standin %s listening on %s\n", s.Name(), s.Addr())
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}
