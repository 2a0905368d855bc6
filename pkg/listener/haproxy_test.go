package listener

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

const haproxyBin = "/usr/sbin/haproxy"

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startHAProxy runs haproxy in the foreground with one TCP frontend per
// backend port, each forwarding to 127.0.0.1:<backend> with send-proxy-v2,
// and returns the frontend addresses once they accept connections.
func startHAProxy(t *testing.T, backends ...int) []string {
	t.Helper()
	bin := haproxyBin
	if _, err := os.Stat(bin); err != nil {
		p, lerr := exec.LookPath("haproxy")
		if lerr != nil {
			t.Fatalf("haproxy not found at %s or in PATH: install haproxy (apt-get install haproxy; make test does it)", haproxyBin)
		}
		bin = p
	}
	var cfg bytes.Buffer
	// No master-worker: with -db haproxy is one foreground process that
	// exits when killed.
	cfg.WriteString("global\n    nbthread 1\n\n" +
		"defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n")
	fronts := make([]string, len(backends))
	for i, port := range backends {
		fronts[i] = fmt.Sprintf("127.0.0.1:%d", freePort(t))
		fmt.Fprintf(&cfg, "\nfrontend f%d\n    bind %s\n    default_backend b%d\n", i, fronts[i], i)
		fmt.Fprintf(&cfg, "\nbackend b%d\n    server s1 127.0.0.1:%d send-proxy-v2\n", i, port)
	}
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var out syncBuffer
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("haproxy config:\n%s\nhaproxy output:\n%s", cfg.String(), out.String())
		}
	})
	// Ready when every frontend accepts. (A probe may reach our backend as
	// a PROXY header followed by EOF; the tests ignore such connections.)
	deadline := time.Now().Add(5 * time.Second)
	for _, fe := range fronts {
		for {
			c, err := net.DialTimeout("tcp", fe, 200*time.Millisecond)
			if err == nil {
				_ = c.Close()
				break
			}
			select {
			case err := <-exited:
				t.Fatalf("haproxy exited: %v\n%s", err, out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("haproxy frontend %s not ready after 5 s: %v\n%s", fe, err, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return fronts
}

// payloadOf returns n bytes of a recognizable pattern.
func payloadOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// TestHAProxySendProxyV2 puts a real HAProxy (send-proxy-v2) in front of two
// of our listeners: one where the test calls ReadProxyHeader itself, and one
// served by Serve with WithProxyProtocol that echoes through io.Copy.
func TestHAProxySendProxyV2(t *testing.T) {
	raw := listenT(t, "127.0.0.1:0", 1)
	served := listenT(t, "127.0.0.1:0", 2)
	fronts := startHAProxy(t, portOf(t, raw[0].Addr()), portOf(t, served[0].Addr()))

	payload := payloadOf(256 << 10)

	t.Run("ReadProxyHeader", func(t *testing.T) {
		type result struct {
			src, dst net.Addr
			data     []byte
			err      error
		}
		results := make(chan result, 16)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := raw[0].Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					src, dst, err := ReadProxyHeader(c, 2*time.Second)
					r := result{src: src, dst: dst, err: err}
					if err == nil {
						r.data = make([]byte, len(payload))
						_, r.err = io.ReadFull(c, r.data)
						if r.err == nil {
							_, r.err = c.Write([]byte("ok"))
						}
					}
					results <- r
				}()
			}
		}()
		defer func() { _ = raw[0].Close(); wg.Wait() }()

		client, err := net.Dial("tcp", fronts[0])
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		if _, err := client.Write(payload); err != nil {
			t.Fatal(err)
		}
		want := client.LocalAddr().String()
		for {
			select {
			case r := <-results:
				if r.src == nil || r.src.String() != want {
					continue // a readiness probe
				}
				if r.err != nil {
					t.Fatalf("our side: %v", r.err)
				}
				if r.dst.String() != fronts[0] {
					t.Errorf("dst = %v, want the frontend %s", r.dst, fronts[0])
				}
				if !bytes.Equal(r.data, payload) {
					t.Fatal("bytes after the PROXY header differ from what the client sent")
				}
				ack := make([]byte, 2)
				if _, err := io.ReadFull(client, ack); err != nil || string(ack) != "ok" {
					t.Fatalf("reply through haproxy: %q, %v", ack, err)
				}
				return
			case <-time.After(5 * time.Second):
				t.Fatalf("no connection from haproxy with src %s", want)
			}
		}
	})

	t.Run("Serve with PROXY protocol", func(t *testing.T) {
		remotes := make(chan string, 16)
		var sessions sync.WaitGroup
		stop := startServe(t, served, func(c net.Conn) {
			defer c.Close()
			remotes <- c.RemoteAddr().String()
			pc, ok := c.(*Conn)
			if !ok {
				t.Errorf("handler got %T, want *listener.Conn", c)
				return
			}
			// Echo through the raw *net.TCPConn: splice.
			_, _ = io.Copy(pc.TCPConn, pc.TCPConn)
			_ = pc.CloseWrite()
		}, WithProxyProtocol(2*time.Second), WithTrustedProxies([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}), WithWaitGroup(&sessions))

		client, err := net.Dial("tcp", fronts[1])
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		want := client.LocalAddr().String()
		echoed := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(client)
			echoed <- b
		}()
		if _, err := client.Write(payload); err != nil {
			t.Fatal(err)
		}
		if err := client.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		found := false
		timeout := time.After(5 * time.Second)
		for !found {
			select {
			case r := <-remotes:
				found = r == want
			case <-timeout:
				t.Fatalf("no session with RemoteAddr %s", want)
			}
		}
		select {
		case b := <-echoed:
			if !bytes.Equal(b, payload) {
				t.Fatalf("echo through haproxy: %d bytes, want %d identical", len(b), len(payload))
			}
		case <-time.After(5 * time.Second):
			t.Fatal("echo through haproxy timed out")
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		sessions.Wait()
	})
}
