package admin_test

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/admin"
)

// TestPeerLease: GET /peer/lease on the health listener answers the
// instance's lease; PeerClient reads it, only "lost" from the instance
// asked about counts as lost; with admin_auth set the endpoint needs the
// credentials and the client sends them; /health still answers.
func TestPeerLease(t *testing.T) {
	var lost atomic.Bool
	auth := admin.NewAuth()
	srv, err := admin.Start(admin.Options{HealthAddr: "127.0.0.1:0", Health: admin.NewHealth(admin.HealthOptions{InstanceID: "p1"}), Auth: auth,
		PeerLease: func() admin.PeerLease {
			l := admin.LeaseLive
			if lost.Load() {
				l = admin.LeaseLost
			}
			return admin.PeerLease{Instance: "p1", Incarnation: "inc1", Lease: l, View: "v1"}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	addr := srv.HealthAddr()
	pc := admin.NewPeerClient()
	probe := func(id string) (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		lost, view, err := pc.Probe(ctx, id, addr)
		if err == nil && view != "v1" {
			t.Errorf("view %q, want v1", view)
		}
		return lost, err
	}
	if l, err := probe("p1"); err != nil || l {
		t.Fatalf("live peer: lost %v err %v", l, err)
	}
	lost.Store(true)
	if l, err := probe("p1"); err != nil || !l {
		t.Fatalf("lost peer: lost %v err %v", l, err)
	}
	if l, err := probe("p2"); !errors.Is(err, admin.ErrPeerMismatch) || l {
		t.Fatalf("another instance's address: lost %v err %v, want ErrPeerMismatch", l, err)
	}
	auth.Set("tok", "", "", false)
	if l, err := probe("p1"); err == nil || l {
		t.Fatalf("without credentials: lost %v err %v, want a 401", l, err)
	}
	pc.SetCredentials("tok", "", "")
	if l, err := probe("p1"); err != nil || !l {
		t.Fatalf("with the token: lost %v err %v", l, err)
	}
	resp, err := http.Get("http://" + addr + "/health/live")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/health/live next to /peer/lease: %v %v", resp, err)
	}
	resp.Body.Close()
}
