package config

import (
	"strings"
	"testing"
)

func TestRelayConfig(t *testing.T) {
	clearEnv(t)
	t.Setenv(EnvRelay, "")
	if c := mustLoad(t, minimal); c.Relay != DefaultRelay || DefaultRelay != RelaySplice {
		t.Errorf("default relay = %q, want %q", c.Relay, RelaySplice)
	}
	if c := mustLoad(t, "relay: sockmap\n"+minimal); c.Relay != RelaySockmap {
		t.Errorf("relay: sockmap loaded as %q", c.Relay)
	}
	if lines := loadErrs(t, "relay: ebpf\n"+minimal); !hasLine(lines, `relay: unknown relay "ebpf" (want splice or sockmap)`) {
		t.Errorf("bad relay: %q", lines)
	}
	t.Setenv(EnvRelay, "SOCKMAP")
	if c := mustLoad(t, "relay: splice\n"+minimal); c.Relay != RelaySockmap {
		t.Errorf("RELAY=SOCKMAP did not override the file: %q", c.Relay)
	}
	t.Setenv(EnvRelay, "")
	c, err := Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Relay != DefaultRelay {
		t.Errorf("example.yaml relay = %q, want the default %q", c.Relay, DefaultRelay)
	}
	// A Config built in code (zero value) means splice: "" is valid.
	var z Config
	if err := z.Validate(); err != nil && hasLine(strings.Split(err.Error(), "\n"), "relay:") {
		t.Errorf("empty relay refused: %v", err)
	}
}

func TestHeaderWalkConfig(t *testing.T) {
	clearEnv(t)
	t.Setenv(EnvHeaderWalk, "")
	if c := mustLoad(t, minimal); c.HeaderWalk != DefaultHeaderWalk || DefaultHeaderWalk != HeaderWalkKernel {
		t.Errorf("default header_walk = %q, want %q", c.HeaderWalk, HeaderWalkKernel)
	}
	if c := mustLoad(t, "header_walk: peek\n"+minimal); c.HeaderWalk != HeaderWalkPeek {
		t.Errorf("header_walk: peek loaded as %q", c.HeaderWalk)
	}
	if lines := loadErrs(t, "header_walk: ebpf\n"+minimal); !hasLine(lines, `header_walk: unknown header walk "ebpf" (want kernel or peek)`) {
		t.Errorf("bad header_walk: %q", lines)
	}
	t.Setenv(EnvHeaderWalk, "PEEK")
	if c := mustLoad(t, "header_walk: kernel\n"+minimal); c.HeaderWalk != HeaderWalkPeek {
		t.Errorf("HEADER_WALK=PEEK did not override the file: %q", c.HeaderWalk)
	}
	t.Setenv(EnvHeaderWalk, "")
	c, err := Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.HeaderWalk != DefaultHeaderWalk {
		t.Errorf("example.yaml header_walk = %q, want the default %q", c.HeaderWalk, DefaultHeaderWalk)
	}
}
