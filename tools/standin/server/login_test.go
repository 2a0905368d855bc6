package server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// TestLoginFailures: bad password, unknown login, unknown database,
// integrated security, and max_connections.
func TestLoginFailures(t *testing.T) {
	srv := start(t, func(c *server.Config) { c.MaxConnections = 2 })

	for _, tc := range []struct {
		name string
		mod  func(o *tdsclient.Options)
	}{
		{"bad password", func(o *tdsclient.Options) { o.Password = "wrong" }},
		{"unknown login", func(o *tdsclient.Options) { o.User = "nobody" }},
	} {
		_, err := dialErr(srv, tc.mod)
		var le *tdsclient.LoginError
		if !errors.As(err, &le) {
			t.Fatalf("%s: %v, want a login error", tc.name, err)
		}
		if le.Number != 18456 || le.Class != 14 || !strings.HasPrefix(le.Message, "Login failed for user '") {
			t.Fatalf("%s: %d class %d %q", tc.name, le.Number, le.Class, le.Message)
		}
	}

	// Unknown database: 4060, then 18456, then DONE with DONE_ERROR.
	raw, answer := prelogin(t, srv.Addr(), tds.EncryptNotSup)
	l := login7(tds.Version74, 4096)
	l.Database = "no_such_db"
	_, toks, _ := rawLogin(t, raw, answer, l)
	if len(toks) != 3 || toks[0].Error == nil || toks[0].Error.Number != 4060 || toks[0].Error.Class != 11 ||
		toks[1].Error == nil || toks[1].Error.Number != 18456 || toks[1].Error.Class != 14 ||
		toks[2].Done == nil || toks[2].Done.Status != tds.DoneError {
		t.Fatalf("unknown database: %s", tokenTypes(toks))
	}
	if !strings.Contains(toks[0].Error.Message, `"no_such_db"`) {
		t.Fatalf("4060 message %q", toks[0].Error.Message)
	}
	waitClosed(t, raw, 3*time.Second)

	// max_connections = 2: the third login gets 17809.
	a, b := dial(t, srv, nil), dial(t, srv, nil)
	_, err := dialErr(srv, nil)
	var le *tdsclient.LoginError
	if !errors.As(err, &le) || le.Number != tds.ErrNumTooManyConns {
		t.Fatalf("third login: %v, want 17809", err)
	}
	st := srv.Stats()
	if st.Current != 2 || st.Peak != 2 || st.Refused != 1 || st.Failed != 3 || st.Total != 2 {
		t.Fatalf("stats %+v", st)
	}
	// The two sessions still work; once one leaves, a login gets in.
	scalar(t, a, "SELECT 1")
	b.Close()
	waitCurrent(t, srv, 1)
	c := dial(t, srv, nil)
	scalar(t, c, "SELECT 1")
	a.Close()
	c.Close()
	waitCurrent(t, srv, 0)
	if st := srv.Stats(); st.Peak != 2 {
		t.Fatalf("peak %d, want 2", st.Peak)
	}
}

// TestLoginResponse pins the login answer, token by token: what a client
// (and tdsgate, forging it for a pooled backend) expects.
func TestLoginResponse(t *testing.T) {
	srv := start(t, nil)
	c := dial(t, srv, func(o *tdsclient.Options) { o.PacketSize = 8192 })
	toks := c.Login
	want := []string{"ENVCHANGE(1)", "INFO(5701)", "ENVCHANGE(7)", "ENVCHANGE(2)", "INFO(5703)", "0xad", "ENVCHANGE(4)", "DONEfd(0x0,0)"}
	if got := strings.Fields(tokenTypes(toks)); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("login answer\n got %v\nwant %v", got, want)
	}
	if e := toks[0].EnvChange; e.NewString() != testDB || e.OldString() != "master" {
		t.Errorf("ENVCHANGE database %q -> %q", e.OldString(), e.NewString())
	}
	if i := toks[1].Error; i.Message != "Changed database context to 'tenant_db'." || i.Class != 0 || i.ServerName != srv.Name() {
		t.Errorf("INFO 5701: %+v", i)
	}
	if e := toks[2].EnvChange; string(e.New) != string(tds.DefaultCollation[:]) {
		t.Errorf("collation % x", e.New)
	}
	if e := toks[3].EnvChange; e.NewString() != "us_english" {
		t.Errorf("language %q", e.NewString())
	}
	if i := toks[4].Error; i.Message != "Changed language setting to us_english." {
		t.Errorf("INFO 5703: %+v", i)
	}
	ack := toks[5].LoginAck
	if ack.Interface != 1 || ack.TDSVersion != tds.Version74 || ack.ProgName != "Microsoft SQL Server\x00\x00" || ack.ProgVer != [4]byte{16, 0, 0x03, 0xE8} {
		t.Errorf("LOGINACK %+v", ack)
	}
	if e := toks[6].EnvChange; e.NewString() != "8192" || e.OldString() != "4096" {
		t.Errorf("packet size %q -> %q", e.OldString(), e.NewString())
	}
	if c.PacketSize != 8192 {
		t.Errorf("PacketSize %d", c.PacketSize)
	}
	// The SPID in the packet headers is the session's @@SPID.
	if c.SPID < 51 {
		t.Fatalf("SPID %d in the login answer's header", c.SPID)
	}
	if v := scalar(t, c, "SELECT @@SPID"); v != int64(c.SPID) {
		t.Fatalf("@@SPID %v, header SPID %d", v, c.SPID)
	}
	// Answers use the negotiated 8192-byte packets.
	r := exec(t, c, "SELECT REPLICATE('x', 3000) AS s FROM generate_series(1, 10)")
	if len(r.Rows) != 10 {
		t.Fatalf("%d rows", len(r.Rows))
	}
	if err := c.Send("SELECT REPLICATE('x', 3000) AS s FROM generate_series(1, 10)", 0); err != nil {
		t.Fatal(err)
	}
	sizes, err := packetSizes(c)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range sizes {
		if n > 8192 || i < len(sizes)-1 && n != 8192 {
			t.Fatalf("packet sizes %v, want 8192-byte packets", sizes)
		}
	}
	if len(sizes) < 4 {
		t.Fatalf("packet sizes %v", sizes)
	}
	// A second session gets another SPID.
	c2 := dial(t, srv, nil)
	if c2.SPID == c.SPID {
		t.Fatalf("two sessions with SPID %d", c.SPID)
	}
}

// packetSizes reads one answer and returns its packets' lengths.
func packetSizes(c *tdsclient.Conn) ([]int, error) {
	var sizes []int
	err := c.StreamPackets(func(h tds.Header, _ []byte) error {
		sizes = append(sizes, int(h.Length))
		return nil
	})
	return sizes, err
}

// TestStatsEndpoint: GET /stats serves the counters as JSON.
func TestStatsEndpoint(t *testing.T) {
	srv := start(t, func(c *server.Config) { c.StatsListen = "127.0.0.1:0" })
	if srv.StatsAddr() == "" {
		t.Fatal("no stats address")
	}
	get := func() server.Stats {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("http://%s/stats", srv.StatsAddr()))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET /stats: %s %s", resp.Status, resp.Header.Get("Content-Type"))
		}
		var st server.Stats
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := get(); st.Current != 0 || st.Peak != 0 {
		t.Fatalf("idle: %+v", st)
	}
	a, b := dial(t, srv, nil), dial(t, srv, nil)
	if st := get(); st.Current != 2 || st.Peak != 2 || st.Total != 2 {
		t.Fatalf("two sessions: %+v", st)
	}
	a.Close()
	b.Close()
	waitCurrent(t, srv, 0)
	if st := get(); st.Current != 0 || st.Peak != 2 {
		t.Fatalf("after close: %+v", st)
	}
	if resp, err := http.Post(fmt.Sprintf("http://%s/stats", srv.StatsAddr()), "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /stats: %v %v", err, resp.Status)
	}
	if start(t, nil).StatsAddr() != "" {
		t.Fatal("StatsAddr without stats_listen")
	}
}

// TestExampleConfig: tools/standin/standin.example.yaml, what
// `go run ./tools/standin -config` reads, decodes strictly into Config and
// starts (on free ports).
func TestExampleConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "standin.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var fc struct {
		Servers []server.Config `yaml:"servers"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil {
		t.Fatal(err)
	}
	if len(fc.Servers) != 3 {
		t.Fatalf("%d servers", len(fc.Servers))
	}
	for i, c := range fc.Servers {
		c.Listen = "127.0.0.1:0"
		if c.StatsListen != "" {
			c.StatsListen = "127.0.0.1:0"
		}
		srv, err := server.Start(c, testenv.Logger())
		if err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
		defer srv.Close()
		conn, err := dialErr(srv, func(o *tdsclient.Options) { o.Password = c.Logins["sa"] })
		if err != nil {
			t.Fatalf("server %d: %v", i, err)
		}
		if v := scalar(t, conn, "SELECT COUNT(*) FROM test_table"); v == nil {
			t.Fatalf("server %d: no test_table", i)
		}
		conn.Close()
	}
}
