package relay

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/certutil"
)

// pair returns the two ends of a real loopback TCP connection.
func pair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); ch <- c }()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// harness: client app ⇄ [clientLeg | relay | serverLeg] ⇄ server app.
func runRelay(t *testing.T, wrapTLS bool) {
	appClient, clientLeg := pair(t)
	serverLeg, appServer := pair(t)
	var cl, sl net.Conn = clientLeg, serverLeg
	var ac, as net.Conn = appClient, appServer
	if wrapTLS {
		cert, err := certutil.SelfSigned("relay-test")
		if err != nil {
			t.Fatal(err)
		}
		srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
		cliCfg := &tls.Config{InsecureSkipVerify: true}
		cl = tls.Server(clientLeg, srvCfg)
		ac = tls.Client(appClient, cliCfg)
	}
	if want := map[bool]Mode{false: ModeSplice, true: ModeTLS}[wrapTLS]; ModeFor(cl, sl) != want {
		t.Fatalf("mode %v", ModeFor(cl, sl))
	}
	up := make([]byte, 3<<20)
	down := make([]byte, 5<<20)
	rand.Read(up)
	rand.Read(down)
	resCh := make(chan Result, 1)
	go func() { resCh <- Relay(cl, sl) }()

	// The server reads everything the client sends until EOF (half-close),
	// then answers with its own data: the answer must still reach the client.
	srvDone := make(chan []byte, 1)
	go func() {
		got, _ := io.ReadAll(as)
		as.Write(down)
		as.Close()
		srvDone <- got
	}()
	go func() {
		ac.Write(up)
		if cw, ok := ac.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	gotDown, err := io.ReadAll(ac)
	if err != nil {
		t.Fatal(err)
	}
	if gotUp := <-srvDone; !bytes.Equal(gotUp, up) {
		t.Fatalf("client→server: %d bytes, want %d", len(gotUp), len(up))
	}
	if !bytes.Equal(gotDown, down) {
		t.Fatalf("server→client: %d bytes, want %d", len(gotDown), len(down))
	}
	res := <-resCh
	if res.ClientToServer != int64(len(up)) || res.ServerToClient != int64(len(down)) {
		t.Errorf("counts %+v", res)
	}
	if res.Ended != SideClient || res.Err != nil {
		t.Errorf("ended %v err %v", res.Ended, res.Err)
	}
	ac.Close()
	cl.Close()
	sl.Close()
}

func TestRelaySplice(t *testing.T) { runRelay(t, false) }
func TestRelayTLS(t *testing.T)    { runRelay(t, true) }

// A reset on one leg ends both directions at once.
func TestRelayAbort(t *testing.T) {
	appClient, clientLeg := pair(t)
	serverLeg, appServer := pair(t)
	defer appServer.Close()
	resCh := make(chan Result, 1)
	go func() { resCh <- Relay(clientLeg, serverLeg) }()
	appClient.SetLinger(0)
	appClient.Close() // RST
	res := <-resCh
	if res.Ended != SideClient {
		t.Errorf("ended %v", res.Ended)
	}
	// The server side saw the end.
	if _, err := appServer.Read(make([]byte, 1)); err == nil {
		t.Error("server leg still open")
	}
}

// pipes counts this process's open pipe fds.
func pipes(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}

// An idle spliced session holds no pipe: pipes are taken only while bytes
// move, so 50 idle sessions cost no more fds than their sockets.
func TestSpliceIdleHoldsNoPipes(t *testing.T) {
	before := pipes(t)
	type leg struct{ ac, cl, sl, as *net.TCPConn }
	var legs []leg
	done := make(chan Result, 50)
	for i := 0; i < 50; i++ {
		ac, cl := pair(t)
		sl, as := pair(t)
		legs = append(legs, leg{ac, cl, sl, as})
		go func() { done <- Relay(cl, sl) }()
		// One round trip each, so every relay has spliced at least once.
		ac.Write([]byte("ping"))
		buf := make([]byte, 4)
		io.ReadFull(as, buf)
		as.Write([]byte("pong"))
		io.ReadFull(ac, buf)
	}
	time.Sleep(100 * time.Millisecond)
	// Pipes returned to Go's pool are closed by the GC; held ones are not.
	for i := 0; i < 3; i++ {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
	// 50 idle sessions holding their pipes would be 200 fds more.
	if extra := pipes(t) - before; extra > 8 {
		t.Errorf("%d pipe fds held by 50 idle spliced sessions", extra)
	}
	for _, l := range legs {
		l.ac.Close()
		l.as.Close()
	}
	for range legs {
		<-done
	}
	for _, l := range legs {
		l.cl.Close()
		l.sl.Close()
	}
}

// A relay that ends on an error leaves the server leg half-closed, not
// closed: the server gets a FIN and the caller can wait for its own close
// (backend.Hangup) before the session's slot goes back.
func TestRelayAbortHalfClosesServer(t *testing.T) {
	appClient, clientLeg := pair(t)
	serverLeg, appServer := pair(t)
	defer appServer.Close()
	defer serverLeg.Close()
	resCh := make(chan Result, 1)
	go func() { resCh <- Relay(clientLeg, serverLeg) }()
	appClient.SetLinger(0)
	appClient.Close() // RST
	<-resCh
	appServer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := appServer.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the server read %v, want the FIN (EOF)", err)
	}
	// Still open: the server's close reaches the server leg.
	appServer.Close()
	serverLeg.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := serverLeg.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the server leg read %v after the server closed, want EOF (not closed by Relay)", err)
	}
}

// TestRelaySmallMessagesBothWays: small messages, each written on from
// the wait that read them, arrive whole and in order both ways, one
// round trip after another, and are counted.
func TestRelaySmallMessagesBothWays(t *testing.T) {
	appClient, clientLeg := pair(t)
	serverLeg, appServer := pair(t)
	resCh := make(chan Result, 1)
	go func() { resCh <- Relay(clientLeg, serverLeg) }()
	var up, down int64
	buf := make([]byte, 256)
	for i := range 200 {
		req := bytes.Repeat([]byte{byte(i)}, 1+i%100)
		appClient.Write(req)
		appServer.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(appServer, buf[:len(req)]); err != nil || !bytes.Equal(buf[:len(req)], req) {
			t.Fatalf("request %d: %v", i, err)
		}
		ans := bytes.Repeat([]byte{byte(255 - i)}, 1+(i*7)%120)
		appServer.Write(ans)
		appClient.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(appClient, buf[:len(ans)]); err != nil || !bytes.Equal(buf[:len(ans)], ans) {
			t.Fatalf("answer %d: %v", i, err)
		}
		up, down = up+int64(len(req)), down+int64(len(ans))
	}
	appClient.Close()
	appServer.Close()
	res := <-resCh
	if res.ClientToServer != up || res.ServerToClient != down {
		t.Fatalf("counted %d/%d, want %d/%d", res.ClientToServer, res.ServerToClient, up, down)
	}
	clientLeg.Close()
	serverLeg.Close()
}

// TestRelaySmallWriteFails: a small message whose write on fails (the
// server leg reset) ends the relay with the write's error, not a hang.
func TestRelaySmallWriteFails(t *testing.T) {
	appClient, clientLeg := pair(t)
	serverLeg, appServer := pair(t)
	defer appClient.Close()
	resCh := make(chan Result, 1)
	go func() { resCh <- Relay(clientLeg, serverLeg) }()
	serverLeg.SetLinger(0)
	serverLeg.CloseWrite()
	appServer.SetLinger(0)
	appServer.Close() // RST toward the server leg
	time.Sleep(50 * time.Millisecond)
	for range 3 {
		appClient.Write([]byte("small"))
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-resCh:
	case <-time.After(5 * time.Second):
		t.Fatal("relay still running after its server leg was reset")
	}
}

// TestRelayAnswerAndFINQueuedTogether: a server that answers and hangs
// up before the relay reads (the answer and its FIN queued together, one
// readiness for both) ends the relay. A short read is no proof that
// nothing else is queued: the relay must read again before it parks, or
// the FIN's wake-up, spent before the read, is never repeated and the
// session (and its slot) waits forever.
func TestRelayAnswerAndFINQueuedTogether(t *testing.T) {
	for i := range 20 {
		appClient, clientLeg := pair(t)
		serverLeg, appServer := pair(t)
		appServer.Write([]byte("answer"))
		appServer.Close()
		time.Sleep(5 * time.Millisecond) // both reach serverLeg's queue
		resCh := make(chan Result, 1)
		go func() { resCh <- Relay(clientLeg, serverLeg) }()
		appClient.SetReadDeadline(time.Now().Add(5 * time.Second))
		if b, err := io.ReadAll(appClient); err != nil || string(b) != "answer" {
			t.Fatalf("round %d: the client read %q, %v; want the answer, then EOF", i, b, err)
		}
		appClient.Close()
		select {
		case <-resCh:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: the relay still runs after the server's FIN and the client's", i)
		}
		clientLeg.Close()
		serverLeg.Close()
	}
}
