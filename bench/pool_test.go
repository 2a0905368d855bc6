package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/config"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

// churnWorkers is how many clients connect, run SELECT 1 and disconnect
// in a loop at once (BENCH_CHURN_WORKERS, default 4).
var churnWorkers = func() int {
	var n int
	if _, err := fmt.Sscan(os.Getenv("BENCH_CHURN_WORKERS"), &n); err == nil && n > 0 {
		return n
	}
	return 4
}()

// churn runs b.N connect + SELECT 1 + disconnect cycles over workers
// clients and reports them per second.
func churn(b *testing.B, o tdsclient.Options, workers int) {
	b.Helper()
	// Warm up: the pooled paths fill their pool.
	for range workers {
		cycle(b, o)
	}
	var next sync.WaitGroup
	jobs := make(chan struct{}, b.N)
	for range b.N {
		jobs <- struct{}{}
	}
	close(jobs)
	b.ResetTimer()
	start := time.Now()
	for range workers {
		next.Add(1)
		go func() {
			defer next.Done()
			for range jobs {
				cycle(b, o)
			}
		}()
	}
	next.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "conn/s")
}

func cycle(b *testing.B, o tdsclient.Options) {
	c, err := tdsclient.Dial(context.Background(), o)
	if err != nil {
		b.Error(err)
		return
	}
	r, err := c.Exec("SELECT 1", 0)
	if err != nil || len(r.Rows) != 1 {
		b.Errorf("SELECT 1: %v %v", r, err)
	}
	c.Close()
}

// BenchmarkChurn measures connect + SELECT 1 + disconnect per second
// (conn/s) through tdsgate without pooling, with pool_mode session, and —
// against a plaintext stand-in, since it speaks no TLS — through FreeTDS
// tdspool. The TLS rows log in to the stand-in with TLS (backend
// encryption login), as SQL Server logins are: that login is what
// pooling saves.
//
//	go test -run '^$' -bench BenchmarkChurn -benchtime 2000x ./bench/
func BenchmarkChurn(b *testing.B) {
	buckets := testenv.Buckets(b, 1, func(_ int, c *server.Config) {
		c.Logins["benchapp"] = "BenchP00lPass"
	})
	proxy := func(b *testing.B, enc config.Encryption, mode config.PoolMode) string {
		cfg := testenv.Config(b, buckets)
		cfg.Routes, cfg.DefaultBucket = nil, "bucket-001"
		bk := &cfg.Buckets[0]
		bk.MaxConnections, bk.MaxQueueSize = 64, 64
		bk.Encryption = enc
		if enc == config.EncryptionNone {
			bk.TrustServerCertificate = false
		}
		bk.PoolMode = mode
		bk.IdleTimeout, bk.MaxLifetime, bk.ResetTimeout = time.Minute, time.Hour, 2*time.Second
		return testenv.Proxy(b, cfg).Addr()
	}
	login := tdsclient.Options{User: "sa", Password: testenv.Passwords[0], Database: "tenant_db", App: "churn", Timeout: 10 * time.Second}
	for _, tc := range []struct {
		name    string
		backend config.Encryption
		client  string
		workers int
		others  bool // also tdspool and direct (plaintext only)
	}{
		{"backend-tls-login/client-plain", config.EncryptionLogin, tdsclient.EncryptNone, churnWorkers, false},
		{"backend-tls-login/client-tls-login", config.EncryptionLogin, tdsclient.EncryptLogin, churnWorkers, false},
		{"backend-plain/client-plain", config.EncryptionNone, tdsclient.EncryptNone, churnWorkers, false},
		// tdspool is single-threaded and stalls clients under concurrent
		// connects (dials time out), so it is compared with one client.
		{"backend-plain/client-plain/1-worker", config.EncryptionNone, tdsclient.EncryptNone, 1, true},
	} {
		for _, mode := range []config.PoolMode{config.PoolModeNone, config.PoolModeSession} {
			b.Run(fmt.Sprintf("%s/tdsgate-pool-%s", tc.name, mode), func(b *testing.B) {
				o := login
				o.Addr, o.Encrypt = proxy(b, tc.backend, mode), tc.client
				churn(b, o, tc.workers)
			})
		}
		if tc.others {
			b.Run(tc.name+"/tdspool", func(b *testing.B) {
				o := login
				o.Addr, o.User, o.Password = startTdspool(b, buckets[0].Addr()), "benchapp", "BenchP00lPass"
				churn(b, o, tc.workers)
			})
			b.Run(tc.name+"/direct", func(b *testing.B) {
				o := login
				o.Addr = buckets[0].Addr()
				churn(b, o, tc.workers)
			})
		}
	}
}

// startTdspool runs FreeTDS tdspool in front of backend (plaintext, TDS
// 7.4), accepting benchapp / BenchP00lPass from clients.
func startTdspool(b *testing.B, backend string) string {
	bin, err := exec.LookPath("tdspool")
	if err != nil {
		b.Fatal("tdspool not installed (apt-get install freetds-bin)")
	}
	dir := b.TempDir()
	host, port, _ := strings.Cut(backend, ":")
	lport := freePort(b)
	freetds := fmt.Sprintf("[global]\n\ttds version = 7.4\n\n[standin]\n\thost = %s\n\tport = %s\n\ttds version = 7.4\n\tencryption = off\n", host, port)
	pool := fmt.Sprintf("[global]\n\tmin pool conn = 1\n\tmax pool conn = 64\n\n[benchpool]\n\tserver = standin\n\tport = %d\n"+
		"\tserver user = sa\n\tserver password = %s\n\tuser = benchapp\n\tpassword = BenchP00lPass\n\tdatabase = tenant_db\n", lport, testenv.Passwords[0])
	fpath, ppath := filepath.Join(dir, "freetds.conf"), filepath.Join(dir, "pool.conf")
	if err := os.WriteFile(fpath, []byte(freetds), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(ppath, []byte(pool), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", ppath, "benchpool")
	cmd.Env = append(os.Environ(), "FREETDSCONF="+fpath)
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", lport)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := tdsclient.Dial(context.Background(), tdsclient.Options{Addr: addr, User: "benchapp", Password: "BenchP00lPass", Database: "tenant_db", Timeout: time.Second})
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			b.Fatalf("tdspool did not answer: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
