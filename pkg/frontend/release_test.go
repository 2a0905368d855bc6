package frontend_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/frontend"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// TestSlotReleasedAfterBackendLetGo: a session whose end is not a clean
// close — the client resets its connection, or the instance sheds it
// (lease_loss close) — gives its slot back only once the backend has let
// go of it. The backend is the oracle: its own count of sessions never
// exceeds the bucket's max. The old session is in a 300 ms WAITFOR at the
// backend when it ends, so the backend sees the close only after it, and
// a client waits in the bucket's queue for the slot. Before the fix the
// slot went back right after the backend socket was closed, the waiter
// logged in at once, and the backend counted 2 sessions for a max of 1
// (the nemesis's +1 windows of a few milliseconds after a shed). With
// pool_mode none (the session's own backend) and session (a pooled one,
// closed rather than returned).
func TestSlotReleasedAfterBackendLetGo(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, h *frontend.Handler, c *tdsclient.Conn)
	}{
		{"client reset", func(t *testing.T, _ *frontend.Handler, c *tdsclient.Conn) {
			c.NetConn().(*net.TCPConn).SetLinger(0)
			c.Close() // RST: the relay's error path
		}},
		{"shed", func(t *testing.T, h *frontend.Handler, _ *tdsclient.Conn) {
			if n := h.ShedSessions("bucket-001", 0); n != 1 {
				t.Fatalf("shed %d sessions, want 1", n)
			}
		}},
	} {
		for _, mode := range []config.PoolMode{config.PoolModeNone, config.PoolModeSession} {
			t.Run(string(mode)+"/"+tc.name, func(t *testing.T) {
				bs := testenv.Buckets(t, 1, func(_ int, c *server.Config) { c.MaxConnections = 0 })
				cfg := testenv.Config(t, bs)
				cfg.Buckets[0].MaxConnections = 1
				cfg.Buckets[0].PoolMode = mode
				cfg.Buckets[0].IdleTimeout, cfg.Buckets[0].MaxLifetime, cfg.Buckets[0].ResetTimeout = time.Minute, 10*time.Minute, 2*time.Second
				a := testenv.Proxy(t, cfg)
				dial := func() (*tdsclient.Conn, error) {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					return tdsclient.Dial(ctx, tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0],
						Database: "tenant_db", Timeout: 10 * time.Second})
				}
				old, err := dial()
				if err != nil {
					t.Fatal(err)
				}
				defer old.Close()
				if err := old.Send("WAITFOR DELAY '00:00:00.300'", 0); err != nil {
					t.Fatal(err)
				}
				// A second client waits in the queue for the only slot.
				next := make(chan error, 1)
				go func() {
					c, err := dial()
					if err == nil {
						_, err = c.Exec("SELECT 1", 0)
						c.Close()
					}
					next <- err
				}()
				testenv.WaitUntil(t, func() bool { return a.Limiter().Snapshot()[0].Queued == 1 })
				bs[0].ResetPeak()
				tc.end(t, a.Handler(), old)
				if err := <-next; err != nil {
					t.Fatalf("the waiting client: %v", err)
				}
				if st := bs[0].Stats(); st.Peak > 1 {
					t.Errorf("the backend held %d sessions at once for a bucket max of 1: the slot went to the waiter before the backend let go of the old session", st.Peak)
				}
			})
		}
	}
}
