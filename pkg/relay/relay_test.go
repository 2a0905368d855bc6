package relay

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"testing"

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
