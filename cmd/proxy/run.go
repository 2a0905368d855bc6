package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tdsgate/tdsgate/pkg/app"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/route"
)

// run loads the config and serves until a signal.
func run(configPath string) error {
	var cfg *config.Config
	var err error
	var reload func() (*config.Config, error)
	if configPath == "" {
		cfg = config.Demo()
	} else {
		if cfg, err = config.Load(configPath); err != nil {
			return err
		}
		reload = func() (*config.Config, error) { return config.Load(configPath) }
	}
	log := app.NewLogger(cfg, os.Stderr)
	if configPath == "" {
		log.Warn("no -config given: running the embedded demo config (three buckets on 127.0.0.1:14331-14333)")
	}
	return app.Run(context.Background(), cfg, log, reload)
}

// hashPassword prints the hash of a password read from stdin, for a
// route's password_hash. The password never appears in argv or logs.
func hashPassword(args []string) error {
	if len(args) > 0 {
		return errors.New("hash-password reads the password from stdin, not from arguments")
	}
	fmt.Fprintln(os.Stderr, "password (one line on stdin):")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return fmt.Errorf("reading the password: %w", err)
	}
	h, err := route.HashPassword(strings.TrimRight(line, "\r\n"))
	if err != nil {
		return err
	}
	fmt.Println(h)
	return nil
}
