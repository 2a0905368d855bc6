// Package redistest runs a real redis-server for tests: on 127.0.0.1, on a
// free port, with no persistence (--save "" --appendonly no), so a restart
// comes back empty, like a Redis restarted without persistence. Tests can
// kill it (SIGKILL) and start it again on the same port.
//
// StartWith adds TLS (a CA, server and client certificates generated in
// the test's temporary directory), AUTH passwords, ACL users and
// replication. StartSentinel runs a primary, replicas and redis-sentinel
// processes for failover tests (sentinel.go).
package redistest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// Binary is the redis-server the helper runs (tools/deps.sh installs it).
const Binary = "/usr/bin/redis-server"

// Server is a redis-server process owned by a test.
type Server struct {
	t    testing.TB
	port int
	opt  Options
	tls  *TLSFiles
	// sentinelConf is the config file of a redis-sentinel process; empty
	// for a data server.
	sentinelConf string
	// dir is a data server's working directory (--dir).
	dir string

	mu     sync.Mutex
	proc   *os.Process
	exited chan struct{}
	out    *syncBuffer
}

// Start runs redis-server on a free loopback port and stops it at cleanup.
// It fails the test if redis-server is not installed.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("redis-server not found at %s (%v): apt-get install redis-server (see tools/deps.sh)", Binary, err)
	}
	return StartWith(t, Options{})
}

// Options configure StartWith. The zero value is Start's server.
type Options struct {
	// Password is the default user's password (requirepass).
	Password string
	// Users are ACL users (name → password) created with every
	// permission (~* &* +@all).
	Users map[string]string
	// DisableDefaultUser turns the default user off, so only Users can
	// log in (a connection without a user name gets NOAUTH).
	DisableDefaultUser bool
	// TLS serves TLS only (no plaintext port), with certificates generated
	// in the test's temporary directory: see Server.TLS.
	TLS bool
	// TLSAuthClients requires a client certificate signed by the CA.
	TLSAuthClients bool
	// ReplicaOf is host:port of a primary to replicate.
	ReplicaOf string
	// Args are extra redis-server arguments ("--maxmemory", "10mb").
	Args []string
}

// StartWith runs redis-server with o on a free loopback port and stops it
// at cleanup.
func StartWith(t testing.TB, o Options) *Server {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("redis-server not found at %s (%v): apt-get install redis-server (see tools/deps.sh)", Binary, err)
	}
	s := &Server{t: t, port: freePort(t), opt: o, dir: t.TempDir()}
	if o.TLS {
		s.tls = GenerateTLS(t, t.TempDir())
	}
	s.start()
	t.Cleanup(s.Kill)
	return s
}

// TLS is the certificates of a server started with Options.TLS; nil
// otherwise.
func (s *Server) TLS() *TLSFiles { return s.tls }

// Options is what the server was started with.
func (s *Server) Options() Options { return s.opt }

// args is the redis-server command line.
func (s *Server) args() []string {
	if s.sentinelConf != "" {
		return []string{s.sentinelConf, "--sentinel", "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
			"--daemonize", "no", "--loglevel", "warning"}
	}
	a := []string{"--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"}
	if s.dir != "" {
		// A replica's full sync writes an RDB file even without --save;
		// keep it out of the test's directory (start deletes it, so that
		// a restart comes back empty).
		a = append(a, "--dir", s.dir)
	}
	if s.tls != nil {
		a = append(a, "--port", "0", "--tls-port", strconv.Itoa(s.port),
			"--tls-cert-file", s.tls.ServerCertFile, "--tls-key-file", s.tls.ServerKeyFile,
			"--tls-ca-cert-file", s.tls.CAFile, "--tls-replication", "yes")
		if s.opt.TLSAuthClients {
			a = append(a, "--tls-auth-clients", "yes")
		} else {
			a = append(a, "--tls-auth-clients", "optional")
		}
	} else {
		a = append(a, "--port", strconv.Itoa(s.port))
	}
	if s.opt.Password != "" {
		a = append(a, "--requirepass", s.opt.Password)
	}
	for name, pw := range s.opt.Users {
		a = append(a, "--user", name, "on", ">"+pw, "~*", "&*", "+@all")
	}
	if s.opt.DisableDefaultUser {
		a = append(a, "--user", "default", "off")
	}
	if s.opt.ReplicaOf != "" {
		h, p, _ := net.SplitHostPort(s.opt.ReplicaOf)
		a = append(a, "--replicaof", h, p)
		if s.opt.Password != "" {
			a = append(a, "--masterauth", s.opt.Password)
		}
	}
	return append(a, s.opt.Args...)
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// Port is the server's port.
func (s *Server) Port() int { return s.port }

// Kill stops the server with SIGKILL (no shutdown, no save) and waits for
// the process to exit. It is a no-op if the server is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	s.proc.Signal(syscall.SIGKILL)
	<-s.exited
	s.proc, s.exited = nil, nil
}

// Pause stops the server with SIGSTOP: connections stay open but nothing
// answers, like a hung Redis or a network black hole. Resume undoes it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Signal(sig)
	}
}

// Restart starts the server again on the same port, empty. Kill it first.
func (s *Server) Restart() {
	s.t.Helper()
	s.start()
}

// Running reports whether the process is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// Log is the server's output so far (its last run).
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

func (s *Server) start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.t.Fatal("redistest: server already running")
	}
	if s.dir != "" {
		os.Remove(filepath.Join(s.dir, "dump.rdb"))
	}
	var lastErr error
	for attempt := 0; attempt < 50; attempt++ {
		out := &syncBuffer{}
		cmd := exec.Command(Binary, s.args()...)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			s.t.Fatalf("redistest: start %s: %v", Binary, err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		if err := waitPing(s.port, s.tlsClientConfig(), exited, 5*time.Second); err != nil {
			cmd.Process.Signal(syscall.SIGKILL)
			<-exited
			lastErr = fmt.Errorf("%v; output: %s", err, out.String())
			time.Sleep(100 * time.Millisecond) // the port may still be held by a dying server
			continue
		}
		s.proc, s.exited, s.out = cmd.Process, exited, out
		return
	}
	s.t.Fatalf("redistest: redis-server on port %d did not answer: %v", s.port, lastErr)
}

// waitPing waits until the server answers PING on port (+PONG, or an
// authentication error: it is up either way), over TLS when tc is set.
func waitPing(port int, tc *tls.Config, exited <-chan struct{}, d time.Duration) error {
	deadline := time.Now().Add(d)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for {
		select {
		case <-exited:
			return fmt.Errorf("redis-server exited")
		default:
		}
		var c net.Conn
		var err error
		if tc != nil {
			c, err = tls.DialWithDialer(&net.Dialer{Timeout: 500 * time.Millisecond}, "tcp", addr, tc)
		} else {
			c, err = net.DialTimeout("tcp", addr, 200*time.Millisecond)
		}
		if err == nil {
			c.SetDeadline(time.Now().Add(time.Second))
			_, err = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 7)
			if err == nil {
				_, err = c.Read(buf)
			}
			c.Close()
			if err == nil && (bytes.HasPrefix(buf, []byte("+PONG")) || bytes.HasPrefix(buf, []byte("-NOAUTH"))) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG on %s within %s: %v", addr, d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// tlsClientConfig is the client side of s.tls (the CA and the client
// certificate), or nil.
func (s *Server) tlsClientConfig() *tls.Config {
	if s.tls == nil {
		return nil
	}
	return s.tls.ClientConfig()
}

// userNames are the names of Options.Users, sorted.
func (s *Server) userNames() []string {
	names := make([]string, 0, len(s.opt.Users))
	for n := range s.opt.Users {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Client returns a rueidis client of the server, closed at cleanup. Tests
// use it as they would redis-cli. It logs in as the first (by name) of Options.Users
// (if any) or with Options.Password, over TLS if the server has it.
func (s *Server) Client(t testing.TB) rueidis.Client {
	t.Helper()
	opt := rueidis.ClientOption{
		InitAddress: []string{s.Addr()}, ForceSingleClient: true, DisableCache: true,
		Dialer: net.Dialer{Timeout: time.Second}, ConnWriteTimeout: 2 * time.Second,
		TLSConfig: s.tlsClientConfig(), Password: s.opt.Password,
	}
	if names := s.userNames(); len(names) > 0 {
		opt.Username, opt.Password = names[0], s.opt.Users[names[0]]
	}
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatalf("redistest: client: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// Do runs one command (redis-cli style: Do(t, c, "GET", "k")) with a 2 s
// timeout and fails the test on an error other than nil.
func Do(t testing.TB, c rueidis.Client, args ...string) rueidis.RedisResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r := c.Do(ctx, c.B().Arbitrary(args...).Build())
	if err := r.Error(); err != nil && !rueidis.IsRedisNil(err) {
		t.Fatalf("redis %v: %v", args, err)
	}
	return r
}

// Int runs a command that answers an integer or an integer string (GET of
// a count); nil counts as 0.
func Int(t testing.TB, c rueidis.Client, args ...string) int64 {
	t.Helper()
	r := Do(t, c, args...)
	if rueidis.IsRedisNil(r.Error()) {
		return 0
	}
	n, err := r.AsInt64()
	if err != nil {
		t.Fatalf("redis %v: %v", args, err)
	}
	return n
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
