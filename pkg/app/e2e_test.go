package app_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/app"
	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/tools/clients"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

func hostPort(t testing.TB, addr string) (string, int) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

func num(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case int64:
		return float64(x)
	case string:
		f, _ := strconv.ParseFloat(x, 64)
		return f
	}
	return -1
}

// TestRunbookThroughProxy runs the runbook's sections 6 to 8 with every
// real client, through the proxy, against three stand-in buckets: each
// login reaches its own bucket, CRUD and an explicit transaction work.
func TestRunbookThroughProxy(t *testing.T) {
	if err := clients.Check(); err != nil {
		t.Fatal(err)
	}
	buckets := testenv.Buckets(t, 3, nil)
	a := testenv.Proxy(t, testenv.Config(t, buckets))
	runRunbook(t, a, buckets)
}

// runRunbook runs the runbook's sections 6 to 8 with every real client
// through a, whose config is testenv.Config's for buckets, 3 sessions at a
// time, and checks that nothing is left open afterwards.
func runRunbook(t *testing.T, a *app.App, buckets []*server.Server) {
	t.Helper()
	host, port := hostPort(t, a.Addr())
	var wg sync.WaitGroup
	sem := make(chan struct{}, 3)
	for _, name := range clients.All {
		for b := 1; b <= 3; b++ {
			name, b := name, b
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				tag := fmt.Sprintf("rb-%s-%d-%d", name, b, time.Now().UnixNano())
				spec := clients.Spec{Host: host, Port: port, User: "sa", Password: testenv.Passwords[b-1], Database: "tenant_db", App: "runbook",
					Steps: []clients.Step{
						{Op: "query", SQL: "SELECT 1 AS resultado"},
						{Op: "query", SQL: fmt.Sprintf("SELECT 'bucket-%d' AS bucket, @@SERVERNAME AS server", b)},
						{Op: "query", SQL: fmt.Sprintf("\nINSERT INTO test_table (name, value) VALUES ('%s', 42);\nSELECT SCOPE_IDENTITY() AS inserted_id;\n", tag)},
						{Op: "query", SQL: "\nSELECT TOP 5 * FROM test_table ORDER BY id DESC;\n"},
						{Op: "query", SQL: fmt.Sprintf("\nUPDATE test_table SET value = 99 WHERE name = '%s';\nSELECT * FROM test_table WHERE name = '%s';\n", tag, tag)},
						{Op: "query", SQL: fmt.Sprintf("\nDELETE FROM test_table WHERE name = '%s';\n", tag)},
						{Op: "query", SQL: fmt.Sprintf("\nBEGIN TRANSACTION;\nINSERT INTO test_table (name, value) VALUES ('%s-tx', 100);\nINSERT INTO test_table (name, value) VALUES ('%s-tx', 200);\nCOMMIT TRANSACTION;\nSELECT * FROM test_table WHERE name = '%s-tx';\n", tag, tag, tag)},
						{Op: "query", SQL: fmt.Sprintf("\nDELETE FROM test_table WHERE name = '%s-tx';\n", tag)},
					}}
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				res, err := clients.Run(ctx, name, spec)
				if err != nil {
					t.Errorf("%s bucket %d: %v", name, b, err)
					return
				}
				if err := res.Err(); err != nil {
					t.Errorf("%s bucket %d: %v (stderr %s)", name, b, err, res.Stderr)
					return
				}
				if num(res.Scalar(0)) != 1 {
					t.Errorf("%s: SELECT 1 = %v", name, res.Scalar(0))
				}
				if rows := res.Rows(1); len(rows) != 1 || rows[0][1] != fmt.Sprintf("sqlserver-bucket-%d", b) {
					t.Errorf("%s: login %d reached %v", name, b, rows)
				}
				if rows := res.Rows(4); len(rows) != 1 || num(rows[0][2]) != 99 {
					t.Errorf("%s: after UPDATE %v", name, rows)
				}
				if rows := res.Rows(6); len(rows) != 2 {
					t.Errorf("%s: transaction rows %v", name, rows)
				}
			}()
		}
	}
	wg.Wait()
	for i, b := range buckets {
		if st := b.Stats(); st.Current != 0 {
			t.Errorf("bucket %d: %d sessions still open", i+1, st.Current)
		}
	}
	for _, s := range a.Limiter().Snapshot() {
		if s.InUse != 0 || s.Queued != 0 {
			t.Errorf("limiter %+v", s)
		}
	}
}

// TestEncryptionThroughProxy: each client encryption mode each client
// supports, against a plaintext backend and a TLS backend.
func TestEncryptionThroughProxy(t *testing.T) {
	if err := clients.Check(); err != nil {
		t.Fatal(err)
	}
	buckets := testenv.Buckets(t, 1, nil)
	type backendCase struct {
		name string
		enc  config.Encryption
	}
	for _, bc := range []backendCase{{"plaintext-backend", config.EncryptionNone}, {"tls-backend", config.EncryptionFull}} {
		bc := bc
		t.Run(bc.name, func(t *testing.T) {
			cfg := testenv.Config(t, buckets)
			// Six clients × their modes, three at a time, on a shared
			// 2-core machine: jTDS's TLS handshake (JVM start-up included)
			// took over testenv's 5 s login bound at load 20 ("Broken pipe").
			cfg.LoginTimeout = 20 * time.Second
			cfg.Buckets[0].Encryption = bc.enc
			cfg.Buckets[0].TrustServerCertificate = bc.enc != config.EncryptionNone
			a := testenv.Proxy(t, cfg)
			host, port := hostPort(t, a.Addr())
			ca, err := clients.WriteCAFile(t.TempDir(), a.Certificate())
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			sem := make(chan struct{}, 3)
			for _, name := range clients.All {
				for _, mode := range []string{clients.EncryptNone, clients.EncryptLogin, clients.EncryptFull, clients.EncryptStrict} {
					if !clients.Supports(name, mode) {
						continue
					}
					name, mode := name, mode
					wg.Add(1)
					go func() {
						defer wg.Done()
						sem <- struct{}{}
						defer func() { <-sem }()
						spec := clients.Spec{Host: host, Port: port, User: "sa", Password: testenv.Passwords[0], Database: "tenant_db", Encrypt: mode,
							Steps: []clients.Step{{Op: "query", SQL: "SELECT @@SERVERNAME AS s, 7 AS n"}, {Op: "query", SQL: "SELECT TOP 3 name FROM test_table ORDER BY id"}}}
						if mode == clients.EncryptStrict {
							spec.CAFile = ca
						}
						ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
						defer cancel()
						res, err := clients.Run(ctx, name, spec)
						if err == nil {
							err = res.Err()
						}
						if err != nil {
							t.Errorf("%s/%s: %v (stderr %s)", name, mode, err, res.Stderr)
							return
						}
						if rows := res.Rows(0); len(rows) != 1 || rows[0][0] != "sqlserver-bucket-1" || num(rows[0][1]) != 7 {
							t.Errorf("%s/%s: %v", name, mode, rows)
						}
						if rows := res.Rows(1); len(rows) != 3 {
							t.Errorf("%s/%s: %v", name, mode, rows)
						}
					}()
				}
			}
			wg.Wait()
			// Plaintext legs splice; any TLS leg goes through crypto/tls.
			spliced, tlsed := a.Handler().Relayed(relay.ModeSplice), a.Handler().Relayed(relay.ModeTLS)
			if bc.enc == config.EncryptionNone && spliced == 0 {
				t.Errorf("no session spliced with a plaintext backend (tls %d)", tlsed)
			}
			if bc.enc != config.EncryptionNone && spliced != 0 {
				t.Errorf("%d sessions spliced with a TLS backend", spliced)
			}
			if tlsed == 0 {
				t.Error("no session relayed through TLS")
			}
			t.Logf("relay modes: splice %d, tls %d", spliced, tlsed)
		})
	}
}

var _ = app.New
var _ server.Config
