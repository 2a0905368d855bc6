package config

import (
	"strings"
	"testing"
)

// admin_listen defaults to loopback; any other address needs
// admin_auth.token_file.
func TestAdminListen(t *testing.T) {
	if c := mustLoad(t, minimal); c.AdminListen != DefaultAdminListen || DefaultAdminListen != "127.0.0.1:9092" {
		t.Fatalf("default admin_listen %q", c.AdminListen)
	}
	if c := mustLoad(t, "admin_listen: \"\"\n"+minimal); c.AdminListen != "" {
		t.Fatalf("explicit empty admin_listen %q", c.AdminListen)
	}
	for _, a := range []string{"127.0.0.1:9092", "[::1]:9092", "localhost:9092", "127.0.0.5:0"} {
		mustLoad(t, "admin_listen: \""+a+"\"\n"+minimal)
	}
	for _, a := range []string{"0.0.0.0:9092", ":9092", "10.0.0.10:9092"} {
		_, err := LoadBytes([]byte("admin_listen: \"" + a + "\"\n" + minimal))
		if err == nil || !strings.Contains(err.Error(), "admin_auth.token_file: required when admin_listen") {
			t.Fatalf("admin_listen %s without a token: %v", a, err)
		}
		mustLoad(t, "admin_listen: \""+a+"\"\nadmin_auth: {token_file: /run/token}\n"+minimal)
	}
	if _, err := LoadBytes([]byte("admin_listen: 127.0.0.1:9091\nmetrics_listen: 127.0.0.1:9091\n" + minimal)); err == nil ||
		!strings.Contains(err.Error(), "admin_listen: \"127.0.0.1:9091\" would bind the same port as metrics_listen") {
		t.Fatalf("admin_listen on metrics_listen's port: %v", err)
	}
}
