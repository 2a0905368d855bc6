package backend_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/clock"
	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/testenv"
)

func login(t *testing.T, password string) []byte {
	t.Helper()
	return (&tds.Login7{TDSVersion: tds.Version74, PacketSize: 4096, OptionFlags1: 0xE0, OptionFlags2: 0x03,
		UserName: "sa", Password: password, Database: "tenant_db", AppName: "backend-test"}).Append(nil)
}

// Each bucket encryption setting against an optional and a forced
// stand-in: what the server answered, whether the session is TLS, and a
// login that works.
func TestConnectModes(t *testing.T) {
	for _, force := range []bool{false, true} {
		bs := testenv.Buckets(t, 1, func(_ int, c *server.Config) {
			if force {
				c.Encryption = server.EncryptionForce
			}
		})
		for _, tc := range []struct {
			enc     backend.Encryption
			wantTLS bool
			wantErr bool
		}{
			{backend.EncryptNone, false, force},
			{backend.EncryptLogin, force, false},
			{backend.EncryptFull, true, false},
			{backend.EncryptStrict, true, false},
		} {
			target := &backend.Target{Bucket: "b", Address: bs[0].Addr(), Encryption: tc.enc,
				TLS: &tls.Config{InsecureSkipVerify: true}, DialTimeout: time.Second, LoginTimeout: 3 * time.Second}
			c, err := backend.Connect(context.Background(), target)
			if tc.wantErr {
				if err == nil {
					c.Close()
					t.Errorf("force=%v %s: connected", force, tc.enc)
				}
				continue
			}
			if err != nil {
				t.Errorf("force=%v %s: %v", force, tc.enc, err)
				continue
			}
			res, err := c.Login(context.Background(), login(t, testenv.Passwords[0]), tds.Version74)
			if err != nil || !res.OK || res.Database != "tenant_db" || res.PacketSize != 4096 || res.LoginAck == nil {
				t.Errorf("force=%v %s: login %+v %v", force, tc.enc, res, err)
			} else if c.TLS() != tc.wantTLS {
				t.Errorf("force=%v %s: session TLS %v, want %v", force, tc.enc, c.TLS(), tc.wantTLS)
			}
			c.Close()
		}
	}
}

// A refused login comes back as the server's own ERROR, not an error.
func TestLoginRefused(t *testing.T) {
	bs := testenv.Buckets(t, 1, nil)
	c, err := backend.Connect(context.Background(), &backend.Target{Bucket: "b", Address: bs[0].Addr(), Encryption: backend.EncryptLogin})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Login(context.Background(), login(t, "wrong"), tds.Version74)
	if err != nil || res.OK || res.Error == nil || res.Error.Number != tds.ErrNumLoginFailed {
		t.Fatalf("%+v %v", res, err)
	}
	if m, err := tds.NewMessageReader(bytesReader(res.Response), 0, 0).ReadMessage(); err != nil || m.Type != tds.PacketReply {
		t.Errorf("response framing: %v %v", m.Type, err)
	}
}

func bytesReader(b []byte) *sliceReader { return &sliceReader{b: b} }

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, errors.New("EOF")
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// Probe is a PRELOGIN exchange: a port that accepts TCP but never speaks
// TDS fails it, a closed port fails at dial, a stand-in passes.
func TestProbe(t *testing.T) {
	bs := testenv.Buckets(t, 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := backend.Probe(ctx, &backend.Target{Address: bs[0].Addr(), DialTimeout: time.Second}); err != nil {
		t.Errorf("stand-in: %v", err)
	}
	silent, _ := net.Listen("tcp", "127.0.0.1:0")
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	_, err := backend.Probe(ctx, &backend.Target{Address: silent.Addr().String(), DialTimeout: 300 * time.Millisecond})
	var be *backend.Error
	if !errors.As(err, &be) || be.Stage != backend.StagePrelogin {
		t.Errorf("silent port: %v", err)
	}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := closed.Addr().String()
	closed.Close()
	if _, err := backend.Probe(ctx, &backend.Target{Address: addr}); !errors.As(err, &be) || be.Stage != backend.StageDial {
		t.Errorf("closed port: %v", err)
	}
}

// The breaker opens after Failures consecutive failures, fails fast while
// open, and a successful probe closes it.
func TestBreaker(t *testing.T) {
	var healthy atomic.Bool
	var changes atomic.Int32
	b := &backend.Breaker{Bucket: "b", Failures: 3, ProbeInterval: 20 * time.Millisecond,
		Probe: func(context.Context) error {
			if healthy.Load() {
				return nil
			}
			return errors.New("down")
		},
		OnChange: func(string, backend.BreakerState, error) { changes.Add(1) },
	}
	defer b.Close()
	b.Failure(errors.New("x"))
	b.Success() // resets the count
	b.Failure(errors.New("x"))
	b.Failure(errors.New("x"))
	if b.Allow() != nil {
		t.Fatal("opened before 3 consecutive failures")
	}
	b.Failure(errors.New("refused"))
	var oe *backend.OpenError
	if err := b.Allow(); !errors.As(err, &oe) || oe.Failures != 3 {
		t.Fatalf("allow while open: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if b.State() != backend.BreakerOpen {
		t.Fatal("closed while the backend is still down")
	}
	healthy.Store(true)
	testenv.WaitUntil(t, func() bool { return b.State() == backend.BreakerClosed })
	if b.Allow() != nil || changes.Load() != 2 {
		t.Errorf("after the probe: %v, %d transitions", b.Allow(), changes.Load())
	}
}

// TestBreakerOnFakeClock: an open breaker probes once per ProbeInterval of
// its clock: with a clock.Fake nothing is probed until the test advances
// it, and Since is the fake time the breaker opened.
func TestBreakerOnFakeClock(t *testing.T) {
	fake := clock.NewFake(time.Unix(1_000_000, 0))
	var probes atomic.Int32
	var healthy atomic.Bool
	b := &backend.Breaker{Bucket: "b", Failures: 1, ProbeInterval: time.Hour, Clock: fake,
		Probe: func(context.Context) error {
			probes.Add(1)
			if healthy.Load() {
				return nil
			}
			return errors.New("down")
		}}
	defer b.Close()
	b.Failure(errors.New("refused"))
	var oe *backend.OpenError
	if err := b.Allow(); !errors.As(err, &oe) || !oe.Since.Equal(time.Unix(1_000_000, 0)) {
		t.Fatalf("open: %v (since %v)", err, oe)
	}
	testenv.WaitUntil(t, func() bool { return fake.Timers() == 1 })
	if probes.Load() != 0 {
		t.Fatal("probed before the interval passed")
	}
	fake.Advance(time.Hour)
	testenv.WaitUntil(t, func() bool { return probes.Load() == 1 && fake.Timers() == 1 })
	if b.State() != backend.BreakerOpen {
		t.Fatal("closed while the backend is down")
	}
	healthy.Store(true)
	fake.Advance(time.Hour)
	testenv.WaitUntil(t, func() bool { return b.State() == backend.BreakerClosed })
	if probes.Load() != 2 {
		t.Fatalf("%d probes, want 2", probes.Load())
	}
}

// Hangup returns once the server has closed its side (FIN, the server's
// close, then ours), and, against a server that never closes, gives up
// after wait: a session's end never hangs on a misbehaving backend.
func TestHangup(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func(t *testing.T) (*net.TCPConn, net.Conn) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		return c.(*net.TCPConn), s
	}
	for _, racing := range []bool{false, true} {
		name := "server closes"
		if racing {
			// An abort's HalfClose (relay.HalfClose) sets a deadline in the
			// past while Hangup waits: not the server's close.
			name += ", deadline set meanwhile"
		}
		t.Run(name, func(t *testing.T) {
			c, s := pair(t)
			var closed atomic.Bool
			go func() {
				buf := make([]byte, 16)
				for {
					if _, err := s.Read(buf); err != nil {
						break
					}
				}
				time.Sleep(100 * time.Millisecond) // the server takes its time to let go
				closed.Store(true)
				s.Close()
			}()
			if racing {
				time.AfterFunc(20*time.Millisecond, func() { c.SetDeadline(time.Now()) })
			}
			backend.Hangup(c, 10*time.Second)
			if !closed.Load() {
				t.Error("Hangup returned before the server closed its side")
			}
		})
	}
	t.Run("server never closes", func(t *testing.T) {
		c, _ := pair(t)
		done := make(chan struct{})
		go func() { backend.Hangup(c, 100*time.Millisecond); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Hangup still waiting 10 s after its 100 ms bound")
		}
	})
	t.Run("half-closed already", func(t *testing.T) {
		c, s := pair(t)
		c.CloseWrite()
		go func() { io.Copy(io.Discard, s); s.Close() }()
		done := make(chan struct{})
		go func() { backend.Hangup(c, 10*time.Second); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Hangup of a half-closed connection did not see the server's close")
		}
	})
}

// The packet size the server's ENVCHANGE names is the session's.
func TestLoginPacketSize(t *testing.T) {
	bs := testenv.Buckets(t, 1, nil)
	c, err := backend.Connect(context.Background(), &backend.Target{Bucket: "b", Address: bs[0].Addr(), Encryption: backend.EncryptNone})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := (&tds.Login7{TDSVersion: tds.Version74, PacketSize: 8000, OptionFlags1: 0xE0, OptionFlags2: 0x03,
		UserName: "sa", Password: testenv.Passwords[0], Database: "tenant_db", AppName: "backend-test"}).Append(nil)
	res, err := c.Login(context.Background(), l, tds.Version74)
	if err != nil || !res.OK || res.PacketSize != 8000 {
		t.Fatalf("login: packet size %d, ok %v, %v; want 8000", res.PacketSize, res.OK, err)
	}
}
