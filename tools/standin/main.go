// Command standin runs one or more SQL Server stand-ins from a YAML config:
//
//	go run ./tools/standin -config tools/standin/standin.example.yaml
//
// A stand-in speaks real TDS 7.4 (TLS included) and executes a subset of
// T-SQL on SQLite. It is not a SQL Server; see README.md.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"go.yaml.in/yaml/v3"

	"github.com/tdsgate/tdsgate/tools/standin/server"
)

// fileConfig is the YAML file: a list of servers.
type fileConfig struct {
	Servers []server.Config `yaml:"servers"`
}

func main() {
	path := flag.String("config", "", "YAML file with a `servers:` list (empty: the runbook's three buckets on 14331-14333)")
	debug := flag.Bool("debug", false, "log every session")
	flag.Parse()
	if err := run(*path, *debug); err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		os.Exit(1)
	}
}

func run(path string, debug bool) error {
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
