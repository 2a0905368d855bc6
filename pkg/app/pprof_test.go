package app_test

import (
	"net/http"
	"testing"

	"github.com/tdsgate/tdsgate/tools/testenv"
)

// TestPprofOption: pprof: true serves /debug/pprof/ (the harness forces a
// GC with /debug/pprof/heap?gc=1) on metrics_listen; off by default.
func TestPprofOption(t *testing.T) {
	for _, on := range []bool{false, true} {
		cfg := testenv.Config(t, testenv.Buckets(t, 1, nil))
		cfg.MetricsListen = "127.0.0.1:0"
		cfg.Pprof = on
		a := testenv.Proxy(t, cfg)
		resp, err := http.Get("http://" + a.MetricsAddr() + "/debug/pprof/heap?gc=1")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{false: http.StatusNotFound, true: http.StatusOK}[on]; resp.StatusCode != want {
			t.Errorf("pprof %v: /debug/pprof/heap?gc=1 answered %d, want %d", on, resp.StatusCode, want)
		}
	}
}
