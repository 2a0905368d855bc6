package app_test

import (
	"fmt"
	"testing"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// With header_walk: kernel (the default) each pooled session arms a
// kernel walk of its backend's headers; large answers arrive whole and
// the backend goes back to the pool clean, session after session. With
// header_walk: peek none is armed.
func TestPoolHeaderWalk(t *testing.T) {
	const mb = 24
	for _, mode := range []config.HeaderWalkMode{config.HeaderWalkKernel, config.HeaderWalkPeek} {
		t.Run(string(mode), func(t *testing.T) {
			buckets := testenv.Buckets(t, 1, func(_ int, c *server.Config) { c.BulkSource = true })
			cfg := pooledConfig(t, buckets)
			cfg.HeaderWalk = mode
			a := testenv.Proxy(t, cfg)
			p := poolOf(t, a)
			for i := range 3 {
				c, err := dialTDS(t, a, testenv.Passwords[0])
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Send(fmt.Sprintf("%s%d", server.BulkPrefix, mb<<20), 0); err != nil {
					t.Fatal(err)
				}
				n, err := c.StreamWire(make([]byte, 256<<10))
				if err != nil || n < mb<<20 {
					t.Fatalf("session %d: bulk answer of %d bytes, %v", i, n, err)
				}
				if r := mustExec(t, c, "SELECT 1 AS x"); fmt.Sprint(r.Scalar()) != "1" {
					t.Fatalf("session %d: SELECT 1 after the bulk answer: %v", i, r.Scalar())
				}
				c.Close()
				waitIdle(t, p, 1)
			}
			armed, stopped := a.Metrics().HeaderWalks()
			if mode == config.HeaderWalkKernel && armed != 3 {
				t.Errorf("kernel: %v walks armed, want 3 (one per pooled session); %v stopped", armed, stopped)
			}
			if mode == config.HeaderWalkPeek && armed != 0 {
				t.Errorf("peek: %v walks armed, want 0", armed)
			}
			t.Logf("%s: %v armed, %v stopped", mode, armed, stopped)
		})
	}
}
