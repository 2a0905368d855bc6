package clients

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/standin/server"
)

// updateSessions rewrites pkg/pin/testdata/clients/*.txt from a live run.
var updateSessions = flag.Bool("update-sessions", false, "rewrite pkg/pin/testdata/clients from the real clients")

// Each client's default session, as measured: one login, a plain query
// twice (OpQuery), then a parameterised one (OpParam). The SQL of the
// steps marks which requests belong to which phase.
const (
	sessionQuery1 = "SELECT 1 AS plain_query_one"
	sessionQuery2 = "SELECT 2 AS plain_query_two"
	sessionParam  = "SELECT @p1 + 1 AS param_query"
	tranInsert    = "INSERT INTO test_table (name, value) VALUES ('tran_insert', 1)"
	tranAfter     = "SELECT 3 AS after_commit"
)

// sessionSteps are the steps of a scenario: "" is the default session,
// "tran" a driver-API transaction (begin, a small insert, commit) and a
// plain query after it.
func sessionSteps(name Name, scenario string) []Step {
	if scenario == "tran" {
		return []Step{{Op: OpBegin}, {Op: OpQuery, SQL: tranInsert}, {Op: OpCommit}, {Op: OpQuery, SQL: tranAfter}}
	}
	steps := []Step{{Op: OpQuery, SQL: sessionQuery1}, {Op: OpQuery, SQL: sessionQuery2}}
	if SupportsOp(name, OpParam) { // tsql has no parameters
		steps = append(steps, Step{Op: OpParam, SQL: sessionParam, Params: []any{41}})
	}
	return steps
}

// recorder is a TCP relay in front of a stand-in that decodes what clients
// send (the session is plaintext: Encrypt none) and records every request
// message in order: SQLBatch text, RPC calls, TM requests, ATTENTION.
type recorder struct {
	ln      net.Listener
	backend string
	mu      sync.Mutex
	conns   [][]recorded
	wg      sync.WaitGroup
}

type recorded struct {
	Kind string // "batch", "rpc", "tm", "attention", "bulk"
	Text string // batch text, or the RPC's statement (sp_executesql, sp_prepare, sp_prepexec), or ""
	Proc string // RPC procedure name, or "#<ProcID>" when sent by id
}

func newRecorder(t *testing.T, backend string) *recorder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln, backend: backend}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

func (r *recorder) port() int { return r.ln.Addr().(*net.TCPAddr).Port }

func (r *recorder) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		idx := len(r.conns)
		r.conns = append(r.conns, nil)
		r.mu.Unlock()
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.relay(c, idx) }()
	}
}

func (r *recorder) relay(c net.Conn, idx int) {
	defer c.Close()
	b, err := net.Dial("tcp", r.backend)
	if err != nil {
		return
	}
	defer b.Close()
	done := make(chan struct{})
	go func() { io.Copy(c, b); c.Close(); close(done) }()
	mr := tds.NewMessageReader(io.TeeReader(c, b), 0, 0)
	for {
		m, err := mr.ReadMessage()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				io.Copy(b, c) // not TDS we can read (TLS): relay the rest blind
			}
			break
		}
		if rec, ok := decodeRequest(m); ok {
			r.mu.Lock()
			r.conns[idx] = append(r.conns[idx], rec)
			r.mu.Unlock()
		}
	}
	b.Close()
	<-done
}

func decodeRequest(m tds.Message) (recorded, bool) {
	switch m.Type {
	case tds.PacketSQLBatch:
		sb, err := tds.ParseSQLBatch(m.Data)
		if err != nil {
			return recorded{Kind: "batch", Text: "<undecodable: " + err.Error() + ">"}, true
		}
		return recorded{Kind: "batch", Text: sb.Text}, true
	case tds.PacketRPC:
		req, err := tds.ParseRPC(m.Data)
		if err != nil || len(req.Calls) == 0 {
			return recorded{Kind: "rpc", Proc: "<undecodable>"}, true
		}
		call := req.Calls[0]
		rec := recorded{Kind: "rpc", Proc: call.ProcName}
		if call.ProcID != 0 {
			rec.Proc = fmt.Sprintf("#%d", call.ProcID)
		}
		// The statement is parameter stmtParam[proc] (sp_prepare's first
		// is the handle, its second the declarations), else the first
		// string parameter.
		at, known := stmtParam[strings.ToLower(call.ProcName)]
		strs := 0
		for i, p := range call.Params {
			v, err := tds.DecodeValue(&p.Type, p.Value)
			s, ok := v.(string)
			if err != nil || !ok {
				continue
			}
			if (known && i == at) || (!known && strs == 0) {
				rec.Text = s
				break
			}
			strs++
		}
		return rec, true
	case tds.PacketTransMgrReq:
		return recorded{Kind: "tm"}, true
	case tds.PacketAttention:
		return recorded{Kind: "attention"}, true
	case tds.PacketBulkLoad:
		return recorded{Kind: "bulk"}, true
	}
	return recorded{}, false
}

// stmtParam is the index of the statement text among an RPC's parameters.
var stmtParam = map[string]int{
	"sp_executesql": 0, "sp_prepare": 2, "sp_prepexec": 2, "sp_cursoropen": 1,
	"sp_cursorprepare": 2, "sp_cursorprepexec": 3,
}

func (r *recorder) take() [][]recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.conns
	r.conns = nil
	return out
}

// sessionFile renders one client's recorded session in the format
// pkg/pin's TestDefaultSessionPins reads: "== <phase> <kind> [proc]" then
// the request text. Phases: connect (before the first plain query), query
// (the plain queries), param (the parameterised query and after).
func sessionFile(name Name, scenario string, reqs []recorded) string {
	var sb strings.Builder
	if scenario == "tran" {
		fmt.Fprintf(&sb, "# %s transaction, recorded by TestDefaultSessionCapture (tools/clients) through a relay\n", name)
		fmt.Fprintf(&sb, "# in front of the stand-in: login, driver begin, %q, driver commit, %q.\n", tranInsert, tranAfter)
	} else {
		fmt.Fprintf(&sb, "# %s default session, recorded by TestDefaultSessionCapture (tools/clients) through a relay\n", name)
		fmt.Fprintf(&sb, "# in front of the stand-in: login, %q, %q, then %q with one parameter.\n", sessionQuery1, sessionQuery2, sessionParam)
	}
	phase := "connect"
	for _, q := range reqs {
		switch {
		case strings.Contains(q.Text, "plain_query_one"):
			phase = "query"
		case strings.Contains(q.Text, "param_query"):
			phase = "param"
		case strings.Contains(q.Text, "tran_insert"):
			phase = "tran"
		case strings.Contains(q.Text, "after_commit"):
			phase = "after"
		}
		fmt.Fprintf(&sb, "== %s %s", phase, q.Kind)
		if q.Proc != "" {
			fmt.Fprintf(&sb, " %s", q.Proc)
		}
		sb.WriteString("\n")
		if q.Text != "" {
			sb.WriteString(strings.TrimRight(q.Text, "\r\n"))
			sb.WriteString("\n")
		}
	}
	return sb.String()
}

// TestDefaultSessionCapture runs every real client through a recording
// relay in front of the stand-in and checks that what it sends is exactly
// what pkg/pin/testdata/clients/<client>.txt holds, the recordings pkg/pin's
// TestDefaultSessionPins computes the pin rate from. Run with
// -update-sessions to rewrite them after a driver upgrade.
func TestDefaultSessionCapture(t *testing.T) {
	requireClients(t)
	srv, err := server.Start(server.RunbookConfig(1, "127.0.0.1:0"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	rec := newRecorder(t, srv.Addr())
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "pkg", "pin", "testdata", "clients")
	for _, scenario := range []string{"", "tran"} {
		for _, name := range All {
			if scenario == "tran" && !SupportsOp(name, OpBegin) {
				continue
			}
			t.Run(string(name)+scenario, func(t *testing.T) {
				captureSession(t, rec, dir, name, scenario)
			})
		}
	}
}

func captureSession(t *testing.T, rec *recorder, dir string, name Name, scenario string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	steps := sessionSteps(name, scenario)
	res, err := Run(ctx, name, Spec{
		Host: "127.0.0.1", Port: rec.port(), User: "sa", Password: "YourStr0ngP@ssword1",
		Database: "tenant_db", Encrypt: EncryptNone, TimeoutS: 20, Steps: steps,
	})
	if err != nil {
		t.Fatal(err)
	}
	if e := res.Err(); e != nil {
		t.Fatalf("%s: %v\n%s", name, e, res.Stderr)
	}
	if got := fmt.Sprint(res.Scalar(len(steps) - 1)); (len(steps) == 3 && got != "42") || (scenario == "tran" && got != "3") {
		t.Fatalf("%s: last query returned %v", name, got)
	}
	conns := rec.take()
	var reqs []recorded
	for _, c := range conns {
		reqs = append(reqs, c...)
	}
	if len(conns) != 1 {
		t.Logf("%s opened %d connections; their requests are recorded in order", name, len(conns))
	}
	got := sessionFile(name, scenario, reqs)
	file := string(name) + ".txt"
	if scenario != "" {
		file = string(name) + "-" + scenario + ".txt"
	}
	path := filepath.Join(dir, file)
	if *updateSessions {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-sessions)", err)
	}
	if string(want) != got {
		t.Errorf("%s sends something else than %s records (driver upgraded? rerun with -update-sessions and recheck pkg/pin's TestDefaultSessionPins):\n--- recorded\n%s\n--- now\n%s", name, path, want, got)
	}
	// The recording is only worth something if the pin scanner
	// reads it: every batch must be readable text.
	for _, q := range reqs {
		if q.Kind == "batch" && strings.HasPrefix(q.Text, "<undecodable") {
			t.Errorf("%s: %s", name, q.Text)
		}
	}
}
