package deployments_test

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"

	"go.yaml.in/yaml/v3"
)

// resolved is the part of `docker-compose config` output the test reads:
// compose's own view of the file, after schema validation, anchors and
// merges, with ports in the long syntax.
type resolved struct {
	Services map[string]struct {
		Image     string `yaml:"image"`
		Build     *struct{ Context, Dockerfile string }
		CapAdd    []string `yaml:"cap_add"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Ports []struct {
			Published any `yaml:"published"` // int in v1, string in v2
			Target    int `yaml:"target"`
		} `yaml:"ports"`
		Networks map[string]*struct {
			IPv4Address string `yaml:"ipv4_address"`
		} `yaml:"networks"`
	} `yaml:"services"`
	Networks map[string]struct {
		IPAM struct {
			Config []struct {
				Subnet string `yaml:"subnet"`
			} `yaml:"config"`
		} `yaml:"ipam"`
	} `yaml:"networks"`
}

// TestDockerComposeConfig: Debian's docker-compose (1.29, compose v1)
// validates docker-compose.yml against the compose schema and resolves
// it, without a Docker engine (DOCKER_HOST points nowhere). From its
// output: the runbook's eleven services, exactly their published ports,
// every depends_on condition, the proxies built locally with no custom
// image tag (so `docker compose down --rmi local` removes their image)
// and given the eBPF tracker's capabilities.
func TestDockerComposeConfig(t *testing.T) {
	if _, err := exec.LookPath("docker-compose"); err != nil {
		t.Fatal("docker-compose is not installed: apt-get install docker-compose (tools/deps.sh installs it)")
	}
	cmd := exec.Command("docker-compose", "-f", "docker-compose.yml", "config")
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix:///nonexistent/docker.sock", "COMPOSE_PROJECT_NAME=")
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("docker-compose config: %v\n%s", err, msg)
	}
	var c resolved
	if err := yaml.Unmarshal(out, &c); err != nil {
		t.Fatalf("docker-compose config output: %v\n%s", err, out)
	}

	ports := map[string][]string{ // service → published:target, exactly
		"sqlserver-bucket-1": {"14331:1433"},
		"sqlserver-bucket-2": {"14332:1433"},
		"sqlserver-bucket-3": {"14333:1433"},
		"redis":              {"6379:6379"},
		"init-db":            nil,
		"proxy-1":            {"18081:8081", "19091:9091"}, // TDS only through HAProxy (PROXY protocol)
		"proxy-2":            {"18082:8081", "19092:9091"},
		"proxy-3":            {"18083:8081", "19093:9091"},
		"haproxy":            {"1433:1433", "8404:8404", "11433:11433", "11434:11434", "11435:11435"},
		"prometheus":         {"9090:9090"},
		"grafana":            {"3000:3000"},
	}
	proxyDeps := map[string]string{"redis": "service_healthy", "init-db": "service_completed_successfully"}
	proxiesStarted := map[string]string{"proxy-1": "service_started", "proxy-2": "service_started", "proxy-3": "service_started"}
	deps := map[string]map[string]string{ // service → dependency → condition, exactly
		"sqlserver-bucket-1": {},
		"sqlserver-bucket-2": {},
		"sqlserver-bucket-3": {},
		"redis":              {},
		"init-db":            {"sqlserver-bucket-1": "service_healthy", "sqlserver-bucket-2": "service_healthy", "sqlserver-bucket-3": "service_healthy"},
		"proxy-1":            proxyDeps,
		"proxy-2":            proxyDeps,
		"proxy-3":            proxyDeps,
		"haproxy":            proxiesStarted,
		"prometheus":         proxiesStarted,
		"grafana":            {"prometheus": "service_started"},
	}
	names := slices.Sorted(maps.Keys(c.Services))
	if want := slices.Sorted(maps.Keys(ports)); !slices.Equal(names, want) {
		t.Errorf("services %v, want the runbook's 11: %v", names, want)
	}
	for name, want := range ports {
		s, ok := c.Services[name]
		if !ok {
			continue
		}
		var got []string
		for _, p := range s.Ports {
			got = append(got, fmt.Sprintf("%v:%d", p.Published, p.Target))
		}
		if !slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(want))) {
			t.Errorf("%s publishes %v, want %v", name, got, want)
		}
		gotDeps := map[string]string{}
		for d, v := range s.DependsOn {
			gotDeps[d] = v.Condition
		}
		if !maps.Equal(gotDeps, deps[name]) {
			t.Errorf("%s depends_on %v, want %v", name, gotDeps, deps[name])
		}
		isProxy := name == "proxy-1" || name == "proxy-2" || name == "proxy-3"
		switch {
		case isProxy && s.Image != "":
			t.Errorf("%s has image %q: a custom tag survives `docker compose down --rmi local`", name, s.Image)
		case isProxy && (s.Build == nil || s.Build.Dockerfile != "deployments/Dockerfile"):
			t.Errorf("%s build %+v, want deployments/Dockerfile", name, s.Build)
		case isProxy && !slices.Equal(s.CapAdd, []string{"BPF", "NET_ADMIN"}):
			t.Errorf("%s cap_add %v, want [BPF NET_ADMIN] (the eBPF tracker's, TestEBPFCapsAsNonroot)", name, s.CapAdd)
		case !isProxy && (s.Image == "" || s.Build != nil):
			t.Errorf("%s: image %q build %+v, want a pulled image", name, s.Image, s.Build)
		}
	}
	// The proxies trust exactly HAProxy's fixed address for the PROXY
	// protocol, and it is in the network's subnet.
	var haIP string
	if n := c.Services["haproxy"].Networks["default"]; n != nil {
		haIP = n.IPv4Address
	}
	cfg := loadComposeProxyConfig(t, "proxy-1")
	if haIP == "" || !cfg.ProxyProtocol.Enabled || !slices.Equal(cfg.ProxyProtocol.Trusted, []string{haIP + "/32"}) {
		t.Errorf("haproxy ipv4_address %q; proxy.yaml proxy_protocol %+v, want enabled and trusting exactly it", haIP, cfg.ProxyProtocol)
	}
	if sn := c.Networks["default"].IPAM.Config; len(sn) != 1 || !prefixContains(sn[0].Subnet, haIP) {
		t.Errorf("network default ipam %+v does not hold haproxy's %s", sn, haIP)
	}
	t.Logf("docker-compose config: %d services, %d bytes resolved; proxies trust haproxy at %s", len(c.Services), len(out), haIP)
}

func prefixContains(prefix, ip string) bool {
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(ip)
	return err == nil && p.Contains(a)
}
