package config

import "testing"

func TestEBPFConfig(t *testing.T) {
	clearEnv(t)
	t.Setenv(EnvEBPFEnabled, "")
	c := mustLoad(t, minimal)
	if !c.EBPF.Enabled || c.EBPF.Cgroup != "" {
		t.Errorf("default ebpf = %+v, want enabled, own cgroup", c.EBPF)
	}
	c = mustLoad(t, "ebpf: {enabled: false, cgroup: /sys/fs/cgroup/tdsgate}\n"+minimal)
	if c.EBPF.Enabled || c.EBPF.Cgroup != "/sys/fs/cgroup/tdsgate" {
		t.Errorf("explicit ebpf = %+v", c.EBPF)
	}
	c = mustLoad(t, "ebpf: {cgroup: /x}\n"+minimal)
	if !c.EBPF.Enabled {
		t.Errorf("ebpf without enabled: %+v, want enabled", c.EBPF)
	}

	t.Setenv(EnvEBPFEnabled, "false")
	if c = mustLoad(t, "ebpf: {enabled: true}\n"+minimal); c.EBPF.Enabled {
		t.Error("EBPF_ENABLED=false did not override the file")
	}
	t.Setenv(EnvEBPFEnabled, "1")
	if c = mustLoad(t, "ebpf: {enabled: false}\n"+minimal); !c.EBPF.Enabled {
		t.Error("EBPF_ENABLED=1 did not override the file")
	}
	t.Setenv(EnvEBPFEnabled, "maybe")
	if lines := loadErrs(t, minimal); !hasLine(lines, `env EBPF_ENABLED: not a boolean (true or false): "maybe"`) {
		t.Errorf("bad EBPF_ENABLED: %q", lines)
	}

	t.Setenv(EnvEBPFEnabled, "")
	c, err := Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !c.EBPF.Enabled || c.EBPF.Cgroup != "" {
		t.Errorf("example.yaml ebpf = %+v", c.EBPF)
	}
}
