// Command barerelay is the benchmark's floor for a relay written in Go:
// it accepts on -listen, dials -backend, and copies bytes both ways, and
// nothing else — no TDS beyond what TLS needs, no admission, no metrics.
//
//	barerelay -listen 127.0.0.1:14400 -backend 127.0.0.1:14331           # io.Copy both ways
//	barerelay -listen 127.0.0.1:14401 -backend 127.0.0.1:14331 -tls      # terminates full TLS on both legs
//
// Without -tls it is io.Copy between the two TCP conns (Go splices
// TCP to TCP), and TLS, if the client asks for it, passes through end to
// end as through HAProxy. With -tls it is the bare crypto/tls relay a
// TLS-terminating proxy is compared with: it passes the client's PRELOGIN
// to the backend and the answer back (both must agree on ENCRYPT_ON),
// then runs the TLS handshake carried in PRELOGIN packets with each side
// (pkg/tds/tdstls: the client's with a self-signed certificate, the
// backend's without verification), and io.Copy between the two TLS conns
// with 32 KiB buffers, as tdsgate's TLS relay does. The harness
// (bench/harness) runs it; it is not part of tdsgate.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/tdsgate/tdsgate/pkg/certutil"
	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/pkg/tds/tdstls"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to accept on")
	backend := flag.String("backend", "", "address to relay to")
	terminate := flag.Bool("tls", false, "terminate full TLS (PRELOGIN ENCRYPT_ON) on both legs")
	flag.Parse()
	if *backend == "" {
		fmt.Fprintln(os.Stderr, "barerelay: -backend is required")
		os.Exit(2)
	}
	var cert tls.Certificate
	if *terminate {
		var err error
		if cert, err = certutil.SelfSigned("barerelay"); err != nil {
			fmt.Fprintln(os.Stderr, "barerelay:", err)
			os.Exit(1)
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "barerelay:", err)
		os.Exit(1)
	}
	fmt.Printf("barerelay listening on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "barerelay:", err)
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			b, err := net.Dial("tcp", *backend)
			if err != nil {
				return
			}
			defer b.Close()
			if !*terminate {
				pipe(c, b)
				return
			}
			cc, bc, err := handshake(c, b, cert)
			if err != nil {
				fmt.Fprintln(os.Stderr, "barerelay: handshake:", err)
				return
			}
			pipe(onlyConn{cc}, onlyConn{bc})
		}()
	}
}

// handshake relays the PRELOGIN exchange, then terminates the TLS carried
// in PRELOGIN packets on both legs.
func handshake(c, b net.Conn, cert tls.Certificate) (*tls.Conn, *tls.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for _, leg := range []struct{ from, to net.Conn }{{c, b}, {b, c}} {
		m, err := tds.NewMessageReader(leg.from, tds.MaxPacketSize, 64<<10).ReadMessage()
		if err != nil {
			return nil, nil, err
		}
		if _, err := leg.to.Write(tds.AppendPackets(nil, m.Type, 0, 0, 1, tds.DefaultPacketSize, m.Data)); err != nil {
			return nil, nil, err
		}
	}
	cc, err := tdstls.Server(ctx, c, &tls.Config{Certificates: []tls.Certificate{cert}}, tds.DefaultPacketSize)
	if err != nil {
		return nil, nil, err
	}
	bc, err := tdstls.Client(ctx, b, &tls.Config{InsecureSkipVerify: true}, tds.DefaultPacketSize)
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Time{})
	b.SetDeadline(time.Time{})
	tdstls.AllowReadAhead(cc)
	tdstls.AllowReadAhead(bc)
	return cc, bc, nil
}

// onlyConn hides ReadFrom and WriteTo, so that io.CopyBuffer uses its
// buffer (as tdsgate's TLS relay does).
type onlyConn struct{ net.Conn }

func (o onlyConn) Read(p []byte) (int, error)  { return o.Conn.Read(p) }
func (o onlyConn) Write(p []byte) (int, error) { return o.Conn.Write(p) }

type closeWriter interface{ CloseWrite() error }

// pipe copies both ways until both directions end, half-closing each
// destination at its source's EOF.
func pipe(c, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		var err error
		if oc, ok := src.(onlyConn); ok {
			_, err = io.CopyBuffer(dst.(onlyConn), oc, make([]byte, 32<<10))
		} else {
			_, err = io.Copy(dst, src)
		}
		if cw, ok := dst.(closeWriter); ok && err == nil {
			cw.CloseWrite()
		} else {
			c.Close()
			b.Close()
		}
		done <- struct{}{}
	}
	go cp(b, c)
	cp(c, b)
	<-done
}
