package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/tdsgate/tdsgate/pkg/ebpf"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// BenchmarkOverhead measures what metrics and the eBPF tracker cost the
// relay's fast path: a SELECT 1 round trip through tdsgate on the splice
// path, with both off (metrics_listen "": the frontend and limiter
// observers are no-ops; ebpf.enabled false) and with both on (/metrics
// served, the sock_ops program attached to this process's cgroup and
// watching the backend). Neither touches a relayed packet: the metrics
// count per login and per session, and the program runs on a watched
// connection's handshake and state changes only, so the two should be
// within noise of each other. Compare with
//
//	go test -run '^$' -bench Overhead -benchtime 5000x -count 5 ./bench/
//
// "on" needs root (CAP_BPF, CAP_NET_ADMIN) and cgroup v2; it fails rather
// than measure a proxy without the tracker.
func BenchmarkOverhead(b *testing.B) {
	buckets := testenv.Buckets(b, 1, nil)
	for _, on := range []bool{false, true} {
		name := "metrics+ebpf=off"
		if on {
			name = "metrics+ebpf=on"
		}
		b.Run(name, func(b *testing.B) {
			cfg := testenv.Config(b, buckets)
			cfg.EBPF.Enabled = false
			cfg.MetricsListen = ""
			if on {
				if tr, err := ebpf.Open("", slog.New(slog.DiscardHandler)); err != nil {
					b.Fatalf("the eBPF half needs root (CAP_BPF, CAP_NET_ADMIN) and cgroup v2: %v", err)
				} else {
					tr.Close()
				}
				cfg.EBPF.Enabled = true
				cfg.MetricsListen = "127.0.0.1:0"
			}
			a := testenv.Proxy(b, cfg)
			c, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: a.Addr(), User: "sa",
				Password: testenv.Passwords[0], Database: "tenant_db", Encrypt: tdsclient.EncryptLogin})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				r, err := c.Exec("SELECT 1", 0)
				if err != nil || len(r.Rows) != 1 {
					b.Fatalf("%v %v", r, err)
				}
			}
			b.StopTimer()
			if on { // the tracker counted this session's backend connection
				if got := scrape(b, a.MetricsAddr(), `proxy_ebpf_backend_connections{bucket="bucket-001"}`); got != "1" {
					b.Fatalf(`proxy_ebpf_backend_connections{bucket="bucket-001"} = %q during the session, want 1`, got)
				}
			}
			c.Close()
			testenv.WaitUntil(b, func() bool { return a.Handler().Relayed(relay.ModeSplice) == 1 })
		})
	}
}

// scrape GETs /metrics at addr and returns series' value ("" if absent).
func scrape(b *testing.B, addr, series string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.Fatal(err)
	}
	for l := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), series+" "); ok {
			return v
		}
	}
	return fmt.Sprintf("absent from %d bytes", len(body))
}
