package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestProxyProtocolForms(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		name, yaml string
		want       ProxyProtocol
	}{
		{"absent", "", ProxyProtocol{}},
		{"old false", "proxy_protocol: false\n", ProxyProtocol{}},
		{"old true", "proxy_protocol: true\n", ProxyProtocol{Enabled: true}},
		{"mapping", `proxy_protocol: {enabled: true, trusted: ["127.0.0.1/32"]}` + "\n",
			ProxyProtocol{Enabled: true, Trusted: []string{"127.0.0.1/32"}}},
		{"block", "proxy_protocol:\n  enabled: true\n  trusted:\n    - 10.0.0.0/8\n    - fd00::1\n",
			ProxyProtocol{Enabled: true, Trusted: []string{"10.0.0.0/8", "fd00::1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := LoadBytes([]byte(tc.yaml + minimal))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.ProxyProtocol, tc.want) && !(len(c.ProxyProtocol.Trusted) == 0 && len(tc.want.Trusted) == 0 && c.ProxyProtocol.Enabled == tc.want.Enabled) {
				t.Errorf("got %+v, want %+v", c.ProxyProtocol, tc.want)
			}
		})
	}

	c, err := LoadBytes([]byte("proxy_protocol:\n  enabled: true\n  trusted: [10.1.2.3, 10.0.0.0/8, \"::ffff:10.9.9.9\"]\n" + minimal))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ProxyProtocol.TrustedPrefixes()
	want := []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.9.9.9/32")}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("prefixes %v %v, want %v", got, err, want)
	}
}

func TestProxyProtocolErrors(t *testing.T) {
	clearEnv(t)
	lines := loadErrs(t, "proxy_protocol:\n  enabled: true\n  trusted: [\"10.0.0.0/33\", nonsense]\n  trust: x\n"+minimal)
	for _, want := range []string{"proxy_protocol.trust: unknown field (line 4)"} {
		if !hasLine(lines, want) {
			t.Errorf("missing %q in:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	lines = loadErrs(t, "proxy_protocol:\n  enabled: true\n  trusted: [\"10.0.0.0/33\", nonsense]\n"+minimal)
	for _, want := range []string{
		`proxy_protocol.trusted[0]: "10.0.0.0/33" is not a CIDR (want e.g. 10.0.0.0/24 or fd00::/64)`,
		`proxy_protocol.trusted[1]: "nonsense" is not an address or a CIDR (want e.g. 10.0.0.5 or 10.0.0.0/24)`,
	} {
		if !hasLine(lines, want) {
			t.Errorf("missing %q in:\n%s", want, strings.Join(lines, "\n"))
		}
	}
	lines = loadErrs(t, "proxy_protocol: {enabled: maybe}\n"+minimal)
	if !hasLine(lines, `proxy_protocol.enabled: want true or false, got "maybe" (line 1)`) {
		t.Errorf("enabled: maybe: %q", lines)
	}
	lines = loadErrs(t, "max_client_connections: -2\nmax_pending_per_source: -1\nclient_idle_timeout: -1s\n"+minimal)
	for _, want := range []string{
		`max_client_connections: must be >= -1 (got -2); 0 derives it from RLIMIT_NOFILE, -1 is no cap`,
		`max_pending_per_source: must be >= 0 (got -1); 0 is no cap`,
		`client_idle_timeout: must be >= 0 (got -1s); 0 is off`,
	} {
		if !hasLine(lines, want) {
			t.Errorf("missing %q in:\n%s", want, strings.Join(lines, "\n"))
		}
	}
}

func TestProxyProtocolEnvKeepsTrusted(t *testing.T) {
	clearEnv(t)
	t.Setenv(EnvProxyProtocol, "true")
	c, err := LoadBytes([]byte("proxy_protocol: {enabled: false, trusted: [127.0.0.1/32]}\n" + minimal))
	if err != nil {
		t.Fatal(err)
	}
	if !c.ProxyProtocol.Enabled || len(c.ProxyProtocol.Trusted) != 1 {
		t.Errorf("env PROXY_PROTOCOL=true: %+v", c.ProxyProtocol)
	}
	t.Setenv(EnvProxyProtocol, "false")
	if c, err = LoadBytes([]byte("proxy_protocol: true\n" + minimal)); err != nil || c.ProxyProtocol.Enabled {
		t.Errorf("env PROXY_PROTOCOL=false: %+v %v", c.ProxyProtocol, err)
	}
}

func TestFrontDoorDefaults(t *testing.T) {
	clearEnv(t)
	c, err := LoadBytes([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxClientConnections != DefaultMaxClientConnections || c.MaxPendingPerSource != DefaultMaxPendingPerSource || c.ClientIdleTimeout != DefaultClientIdleTimeout {
		t.Errorf("defaults: %d %d %s", c.MaxClientConnections, c.MaxPendingPerSource, c.ClientIdleTimeout)
	}
	c, err = LoadBytes([]byte("max_client_connections: 10\nmax_pending_per_source: 0\nclient_idle_timeout: 90s\n" + minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxClientConnections != 10 || c.MaxPendingPerSource != 0 || c.ClientIdleTimeout.Seconds() != 90 {
		t.Errorf("explicit: %d %d %s", c.MaxClientConnections, c.MaxPendingPerSource, c.ClientIdleTimeout)
	}
}
