package clients

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"
)

// checkOnce runs Check once per test binary: every test needs the clients.
var (
	checkOnce sync.Once
	checkErr  error
)

func requireClients(t *testing.T) {
	t.Helper()
	checkOnce.Do(func() { checkErr = Check() })
	if checkErr != nil {
		t.Fatalf("real SQL Server clients are missing (run tools/deps.sh as root):\n%v", checkErr)
	}
}

func TestCheck(t *testing.T) {
	requireClients(t)
}

// deadPort returns a loopback port with nothing listening.
func deadPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return p
}

func baseSpec(port int, enc string) Spec {
	return Spec{
		Host: "127.0.0.1", Port: port, User: "sa", Password: "YourStr0ngP@ssword1",
		Database: "tenant_db", Encrypt: enc, App: "tdsgate-clients-test", TimeoutS: 5,
		Steps: []Step{{Op: OpQuery, SQL: "SELECT 1 AS x"}},
	}
}

func TestConnectionRefused(t *testing.T) {
	requireClients(t)
	port := deadPort(t)
	for _, name := range All {
		t.Run(string(name), func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := Run(ctx, name, baseSpec(port, EncryptNone))
			if err != nil {
				t.Fatalf("harness error: %v", err)
			}
			if res.Client != name || res.Connected {
				t.Fatalf("want client %s not connected, got %+v", name, res)
			}
			if res.LoginError == nil || res.LoginError.Message == "" {
				t.Fatalf("want a connection error, got %+v (stderr %s)", res, res.Stderr)
			}
			if res.LoginError.Number != 0 {
				t.Errorf("connection refused is not a server error, got number %d", res.LoginError.Number)
			}
			if len(res.Steps) != 0 {
				t.Errorf("no steps should run without a connection, got %d", len(res.Steps))
			}
			if res.Err() == nil {
				t.Error("Result.Err() = nil for a failed connection")
			}
			t.Logf("%s: %s", name, res.LoginError.Message)
		})
	}
}

// wantFirst is the observed first packet per client and mode. It pins the
// mapping of our modes to each real client's settings (README.md).
var wantFirst = map[Name]map[string]string{
	TSQL: {
		EncryptNone:  "PRELOGIN ENCRYPTION=0x02 NOT_SUP",
		EncryptLogin: "PRELOGIN ENCRYPTION=0x00 OFF",
		EncryptFull:  "PRELOGIN ENCRYPTION=0x01 ON",
	},
	Pytds: {
		EncryptNone:  "PRELOGIN ENCRYPTION=0x02 NOT_SUP",
		EncryptLogin: "PRELOGIN ENCRYPTION=0x00 OFF",
		EncryptFull:  "PRELOGIN ENCRYPTION=0x01 ON",
	},
	JTDS: {
		EncryptNone: "LOGIN7 first (no PRELOGIN)",
		EncryptFull: "PRELOGIN ENCRYPTION=0x01 ON",
	},
	Tedious: {
		EncryptNone:   "PRELOGIN ENCRYPTION=0x02 NOT_SUP",
		EncryptFull:   "PRELOGIN ENCRYPTION=0x01 ON",
		EncryptStrict: "TLS ClientHello first (TDS 8.0 strict)",
	},
	GoMSSQL: {
		EncryptNone:   "PRELOGIN ENCRYPTION=0x02 NOT_SUP",
		EncryptLogin:  "PRELOGIN ENCRYPTION=0x00 OFF",
		EncryptFull:   "PRELOGIN ENCRYPTION=0x01 ON",
		EncryptStrict: "TLS ClientHello first (TDS 8.0 strict)",
	},
	PyODBC: {
		EncryptNone:  "PRELOGIN ENCRYPTION=0x02 NOT_SUP",
		EncryptLogin: "PRELOGIN ENCRYPTION=0x00 OFF",
		EncryptFull:  "PRELOGIN ENCRYPTION=0x01 ON",
	},
}

func TestPreloginEncryptionByte(t *testing.T) {
	requireClients(t)
	for _, name := range All {
		for _, mode := range []string{EncryptNone, EncryptLogin, EncryptFull, EncryptStrict} {
			want, listed := wantFirst[name][mode]
			if Supports(name, mode) != listed {
				t.Errorf("Supports(%s, %s) = %v but wantFirst lists it: %v", name, mode, Supports(name, mode), listed)
				continue
			}
			if !listed {
				continue
			}
			t.Run(fmt.Sprintf("%s/%s", name, mode), func(t *testing.T) {
				t.Parallel()
				srv := newFirstPacketServer(t)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				type out struct {
					res Result
					err error
				}
				spec := baseSpec(srv.port(), mode)
				if mode == EncryptStrict {
					spec.CAFile = testCAFile(t)
				}
				ch := make(chan out, 1)
				go func() {
					res, err := Run(ctx, name, spec)
					ch <- out{res, err}
				}()
				var got firstPacket
				var o out
				select {
				case got = <-srv.got:
					o = <-ch
				case o = <-ch:
					select {
					case got = <-srv.got:
					case <-time.After(5 * time.Second):
						t.Fatalf("client sent nothing; result %+v, err %v", o.res, o.err)
					}
				}
				if o.err != nil {
					t.Fatalf("harness error: %v", o.err)
				}
				if o.res.Connected || o.res.LoginError == nil {
					t.Errorf("the server hung up, want connected=false with a login error, got %+v", o.res)
				}
				if got.String() != want {
					t.Errorf("%s encrypt=%s: first packet %q, want %q (raw %s)", name, mode, got, want, hexPrefix(got.Raw))
				}
				t.Logf("%s encrypt=%s -> %s", name, mode, got)
			})
		}
	}
}

// TestFakeServerSession runs every client, in every encryption mode it
// supports, through a session on a minimal fake server (TLS by
// pkg/tds/tdstls with a self-signed certificate, which every client must
// accept without a cafile): a result set, a server error (not fatal), a
// sleep, a cancel (ATTENTION) and a query after it on the same session.
func TestFakeServerSession(t *testing.T) {
	requireClients(t)
	for _, name := range All {
		for _, mode := range []string{EncryptNone, EncryptLogin, EncryptFull, EncryptStrict} {
			if !Supports(name, mode) {
				continue
			}
			t.Run(string(name)+"/"+mode, func(t *testing.T) {
				t.Parallel()
				fakeSession(t, name, mode)
			})
		}
	}
}

func fakeSession(t *testing.T, name Name, mode string) {
	{
		{
			srv := newFakeTDS(t, mode)
			spec := baseSpec(srv.port(), mode)
			if mode == EncryptStrict { // TDS 8.0 drivers always verify the certificate
				spec.CAFile = testCAFile(t)
			}
			spec.Steps = []Step{
				{Op: OpQuery, SQL: "SELECT 1 AS x"},
				{Op: OpQuery, SQL: "SELECT * FROM missing_table"},
				{Op: OpSleep, MS: 50},
				{Op: OpCancel, SQL: "WAITFOR DELAY '00:00:10'", AfterMS: 300},
				{Op: OpHold, SQL: "SELECT 1 AS x"},
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := Run(ctx, name, spec)
			if err != nil {
				t.Fatalf("harness error: %v", err)
			}
			if !res.Connected {
				t.Fatalf("not connected: %v\nstderr: %s", res.LoginError, res.Stderr)
			}
			if len(res.Steps) != len(spec.Steps) {
				t.Fatalf("got %d step results, want %d", len(res.Steps), len(spec.Steps))
			}
			for i := range []int{0, 4} {
				i := []int{0, 4}[i]
				st := res.Steps[i]
				if !st.OK || st.Error != nil {
					t.Errorf("step %d: %+v", i, st)
					continue
				}
				if v := res.Scalar(i); v != int64(1) {
					t.Errorf("step %d: Scalar = %#v, want int64(1); results %+v", i, v, st.Results)
				}
				if want := []string{"x"}; !reflect.DeepEqual(st.Results[0].Columns, want) {
					t.Errorf("step %d: columns %q, want %q", i, st.Results[0].Columns, want)
				}
			}
			if e := res.Steps[1].Error; e == nil || e.Number != 208 || res.Steps[1].OK {
				t.Errorf("step 1: want error 208, got %+v", res.Steps[1])
			} else if e.Class != 0 && e.Class != 16 {
				t.Errorf("step 1: class %d, want 16", e.Class)
			}
			if st := res.Steps[2]; !st.OK || st.MS < 45 {
				t.Errorf("sleep step: %+v", st)
			}
			c := res.Steps[3]
			if SupportsOp(name, OpCancel) {
				// jTDS sometimes ends the statement on the first of the two
				// response messages and reports a normal completion (the
				// DONE_ATTN is consumed later): accept that for jTDS only.
				if !c.OK || (!c.Canceled && name != JTDS) {
					t.Errorf("cancel step: want canceled, got %+v", c)
				}
				if c.MS < 250 || c.MS > 8000 {
					t.Errorf("cancel step took %.1f ms, want about 300", c.MS)
				}
				if srv.attentions() != 1 {
					t.Errorf("server saw %d ATTENTION packets, want 1", srv.attentions())
				}
			} else if !c.Unsupported || c.OK {
				t.Errorf("cancel on %s: want unsupported, got %+v", name, c)
			}
			if err := res.StepErr(1); err == nil {
				t.Error("StepErr(1) = nil")
			}
			t.Logf("%s/%s: connect %.1f ms, steps %+v", name, mode, res.ConnectMS, res.Steps)
		}
	}
}

func TestSupports(t *testing.T) {
	if !Supports(TSQL, "") || Supports(TSQL, EncryptStrict) || Supports(Tedious, EncryptLogin) || !Supports(GoMSSQL, EncryptStrict) {
		t.Error("Supports table changed")
	}
	if SupportsOp(TSQL, OpParam) || SupportsOp(TSQL, OpCancel) || !SupportsOp(TSQL, OpBegin) || !SupportsOp(Pytds, OpCancel) || SupportsOp("nope", OpQuery) {
		t.Error("SupportsOp table changed")
	}
	if _, err := Run(context.Background(), Tedious, Spec{Encrypt: EncryptLogin}); err == nil {
		t.Error("Run with an unsupported mode must be a harness error")
	}
	if _, err := Run(context.Background(), GoMSSQL, Spec{Encrypt: EncryptStrict}); err == nil {
		t.Error("Run in strict mode without a CAFile must be a harness error")
	}
}

func TestParseTSQLBatch(t *testing.T) {
	lines := []string{
		"a\x1fb",
		"1\x1fNULL",
		"007\x1f1.5",
		"(2 rows affected)",
		"Msg 208 (severity 16, state 1) from SRV Line 1:",
		"\t\"Invalid object name 'x'.\"",
		"",
		"",
		"(1 row affected)",
	}
	var r StepResult
	parseTSQLBatch(lines, &r)
	want := []ResultSet{
		{Columns: []string{"a", "b"}, Rows: [][]any{{int64(1), nil}, {"007", 1.5}}},
		{Columns: []string{""}, Rows: [][]any{{""}}},
	}
	if !reflect.DeepEqual(r.Results, want) {
		t.Errorf("results %#v\nwant %#v", r.Results, want)
	}
	if !reflect.DeepEqual(r.RowCounts, []int64{2, 1}) {
		t.Errorf("rowcounts %v", r.RowCounts)
	}
	if r.Error == nil || r.Error.Number != 208 || r.Error.Class != 16 || r.Error.State != 1 || r.Error.Message != "Invalid object name 'x'." {
		t.Errorf("error %+v", r.Error)
	}
	if got := cleanTSQLLine("\r 1\r 2\r1> 2> x"); got != "x" {
		t.Errorf("cleanTSQLLine = %q", got)
	}
}

func TestDecodeResult(t *testing.T) {
	r, err := decodeResult([]byte(`noise
{"client":"x","connected":true,"connect_ms":1.5,"login_error":null,"steps":[{"op":"query","ok":true,"ms":1,"results":[{"columns":["a","b","c"],"rows":[[1,2.5,"s"],[null,true,"9007199254740993"]]}],"rowcounts":[2],"error":null,"canceled":false}]}`))
	if err != nil {
		t.Fatal(err)
	}
	want := [][]any{{int64(1), 2.5, "s"}, {nil, true, "9007199254740993"}}
	if !reflect.DeepEqual(r.Steps[0].Results[0].Rows, want) {
		t.Errorf("rows %#v", r.Steps[0].Results[0].Rows)
	}
	if r.Scalar(0) != int64(1) || r.Err() != nil {
		t.Errorf("Scalar/Err: %v %v", r.Scalar(0), r.Err())
	}
	if _, err := decodeResult(nil); err == nil {
		t.Error("empty output must fail")
	}
}

// testCAFile writes the fake server's self-signed certificate as a CA file.
func testCAFile(t *testing.T) string {
	t.Helper()
	ca, err := WriteCAFile(t.TempDir(), fakeCert(t))
	if err != nil {
		t.Fatal(err)
	}
	return ca
}
