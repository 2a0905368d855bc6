package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/admin"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/listener"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

func adminCall[T any](t *testing.T, method, url string) (T, int) {
	t.Helper()
	var v T
	req, _ := http.NewRequest(method, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return v, resp.StatusCode
}

// A standalone instance's admin API: buckets (max from the config, global
// = held, fallback "standalone"), instances (itself), pause in the
// standalone limiter, and POST /admin/reload as SIGHUP: a config error
// answers 422 with its YAML path and keeps the running config, a good one
// applies.
func TestAdminAPIStandalone(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	cfg := testenv.Config(t, buckets)
	cfg.AdminListen = "127.0.0.1:0"
	a := testenv.Proxy(t, cfg)
	base := "http://" + a.AdminAddr()

	c, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0],
		Database: "tenant_db", App: "console-test", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	bs, code := adminCall[[]admin.Bucket](t, "GET", base+"/admin/buckets")
	if code != 200 || len(bs) != 1 {
		t.Fatalf("%d %+v", code, bs)
	}
	if b := bs[0]; b.Bucket != "bucket-001" || b.Max != 20 || b.MaxSource != "config" || b.Held != 1 || b.GlobalCount != 1 ||
		b.Fallback != "standalone" || b.PoolMode != "none" || b.Breaker != "closed" || b.Paused {
		t.Fatalf("bucket %+v", b)
	}
	in, _ := adminCall[admin.Instances](t, "GET", base+"/admin/instances")
	if in.Redis || len(in.Instances) != 1 || !in.Instances[0].Self || in.Instances[0].Holdings["bucket-001"] != 1 || in.Counts["bucket-001"] != 1 {
		t.Fatalf("standalone instances %+v", in)
	}
	ss, _ := adminCall[[]admin.Session](t, "GET", base+"/admin/sessions?state=active")
	if len(ss) != 1 || ss[0].App != "console-test" || ss[0].User != "sa" || ss[0].Bucket != "bucket-001" || ss[0].Encryption != "none" {
		t.Fatalf("sessions %+v", ss)
	}
	if _, code := adminCall[admin.ErrorBody](t, "GET", base+"/admin/sessions?state=sleeping"); code != 400 {
		t.Fatalf("unknown state: %d", code)
	}
	if _, code := adminCall[admin.ErrorBody](t, "POST", base+"/admin/buckets/nope/pause"); code != 404 {
		t.Fatalf("unknown bucket: %d", code)
	}
	if _, code := adminCall[admin.ErrorBody](t, "POST", base+"/admin/buckets/bucket-001/pause?fleet=1"); code != 409 {
		t.Fatalf("fleet without redis: %d", code)
	}
	act, code := adminCall[admin.Action](t, "POST", base+"/admin/buckets/bucket-001/pause")
	if code != 200 || len(act.Acks) != 1 || !act.Acks[0].Paused {
		t.Fatalf("pause %d %+v", code, act)
	}
	// Paused: a new login queues; resume admits it.
	got := make(chan error, 1)
	go func() {
		c, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: a.Addr(), User: "sa", Password: testenv.Passwords[0], Database: "tenant_db", Timeout: 10 * time.Second})
		if err == nil {
			c.Close()
		}
		got <- err
	}()
	testenv.WaitUntil(t, func() bool {
		bs, _ := adminCall[[]admin.Bucket](t, "GET", base+"/admin/buckets")
		return bs[0].Queued == 1
	})
	select {
	case err := <-got:
		t.Fatalf("a login got through a paused bucket: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	adminCall[admin.Action](t, "POST", base+"/admin/buckets/bucket-001/resume")
	if err := <-got; err != nil {
		t.Fatalf("after resume: %v", err)
	}

	// A connection that has sent nothing is in its handshake; killing it
	// closes it, and once every client is gone the table is empty.
	raw, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var hs admin.Session
	testenv.WaitUntil(t, func() bool {
		ss, _ := adminCall[[]admin.Session](t, "GET", base+"/admin/sessions?state=handshake")
		if len(ss) == 1 {
			hs = ss[0]
		}
		return len(ss) == 1
	})
	if k, code := adminCall[admin.Killed](t, "POST", fmt.Sprintf("%s/admin/sessions/%d/kill", base, hs.ID)); code != 200 || k.State != "handshake" || k.ErrorSent {
		t.Fatalf("kill in handshake: %d %+v", code, k)
	}
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := raw.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Fatalf("the killed handshake's connection is still open: %d %v", n, err)
	}
	c.Close()
	testenv.WaitUntil(t, func() bool {
		ss, _ := adminCall[[]admin.Session](t, "GET", base+"/admin/sessions")
		return len(ss) == 0
	})

	// Reload: a bad config answers by YAML path, the running one stays.
	a.SetReloader(func() (*config.Config, error) {
		return nil, errors.Join(&config.FieldError{Path: "buckets[0].max_connections", Msg: "must be >= 0 (got -1)"})
	})
	rl, code := adminCall[admin.Reload](t, "POST", base+"/admin/reload")
	if code != http.StatusUnprocessableEntity || rl.OK || len(rl.Errors) != 1 || rl.Errors[0].Path != "buckets[0].max_connections" {
		t.Fatalf("bad reload: %d %+v", code, rl)
	}
	next := *a.Config()
	next.Buckets = append([]config.Bucket(nil), next.Buckets...)
	next.Buckets[0].MaxConnections = 7
	a.SetReloader(func() (*config.Config, error) { return &next, nil })
	rl, code = adminCall[admin.Reload](t, "POST", base+"/admin/reload")
	if code != 200 || !rl.OK || rl.Buckets != 1 {
		t.Fatalf("good reload: %d %+v", code, rl)
	}
	if bs, _ := adminCall[[]admin.Bucket](t, "GET", base+"/admin/buckets"); bs[0].Max != 7 {
		t.Fatalf("after the reload: %+v", bs[0])
	}
}

// Behind a balancer that sends PROXY v2 headers, /admin/sessions shows the
// real client's address from the header, and the session's login once it
// is in.
func TestAdminSessionsProxyV2Client(t *testing.T) {
	buckets := testenv.Buckets(t, 1, nil)
	cfg := testenv.Config(t, buckets)
	cfg.AdminListen = "127.0.0.1:0"
	cfg.ProxyProtocol = config.ProxyProtocol{Enabled: true, Trusted: []string{"127.0.0.1/32"}}
	a := testenv.Proxy(t, cfg)
	base := "http://" + a.AdminAddr()
	c, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := netip.MustParseAddrPort("203.0.113.7:4242")
	if _, err := c.Write(listener.AppendProxyHeader(nil, false, client, netip.MustParseAddrPort("192.0.2.1:1433"), nil)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitUntil(t, func() bool {
		ss, _ := adminCall[[]admin.Session](t, "GET", base+"/admin/sessions")
		return len(ss) == 1 && ss[0].Client == "203.0.113.7:4242" && ss[0].State == "handshake"
	})
}
