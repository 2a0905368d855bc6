package tdstls

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// testCert is a self-signed certificate for "localhost" and 127.0.0.1.
type testCert struct {
	cert tls.Certificate
	pool *x509.CertPool
}

var (
	ecOnce  sync.Once
	ecCert  testCert
	rsaOnce sync.Once
	rsaCert testCert
)

func makeCert(tb testing.TB, rsaKey bool) testCert {
	tb.Helper()
	var (
		priv any
		pub  any
	)
	if rsaKey {
		k, err := rsa.GenerateKey(rand.Reader, 4096)
		if err != nil {
			tb.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"tdsgate test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		tb.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return testCert{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, pool: pool}
}

// ecdsaCert returns a shared P-256 certificate (small: the server flight
// fits in one 4096-byte packet).
func ecdsaCert(tb testing.TB) testCert {
	ecOnce.Do(func() { ecCert = makeCert(tb, false) })
	return ecCert
}

// bigCert returns a shared RSA-4096 certificate (its flight exceeds 512 bytes).
func bigCert(tb testing.TB) testCert {
	rsaOnce.Do(func() { rsaCert = makeCert(tb, true) })
	return rsaCert
}

func serverConfig(tc testCert) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{tc.cert}, MinVersion: tls.VersionTLS12}
}

func clientConfig(tc testCert) *tls.Config {
	return &tls.Config{ServerName: "localhost", RootCAs: tc.pool, MinVersion: tls.VersionTLS12}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

// recConn records every byte written through it.
type recConn struct {
	net.Conn
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recConn) Write(b []byte) (int, error) {
	r.mu.Lock()
	r.buf.Write(b)
	r.mu.Unlock()
	return r.Conn.Write(b)
}

func (r *recConn) Bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.buf.Bytes())
}

// handshakePair runs Server and Client against each other on a loopback
// TCP connection, recording what each side wrote.
type pair struct {
	cli, srv       *tls.Conn
	cliRaw, srvRaw net.Conn
	cliRec, srvRec *recConn
}

func handshakePair(t testing.TB, scfg, ccfg *tls.Config, packetSize int) pair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, s := tcpPair(t)
	p := pair{cliRaw: c, srvRaw: s, cliRec: &recConn{Conn: c}, srvRec: &recConn{Conn: s}}
	errc := make(chan error, 1)
	go func() {
		var err error
		p.srv, err = Server(ctx, p.srvRec, scfg, packetSize)
		errc <- err
	}()
	var err error
	p.cli, err = Client(ctx, p.cliRec, ccfg, packetSize)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server: %v", err)
	}
	return p
}
