//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// answers builds n answers of random lengths in packets of ps bytes, and
// counts their packets and EOMs.
func answers(r *rand.Rand, n, ps int) (b []byte, packets, eoms int) {
	for range n {
		payload := make([]byte, r.IntN(6*ps))
		for i := range payload {
			payload[i] = byte(r.Uint32())
		}
		start := len(b)
		b = tds.AppendPackets(b, tds.PacketReply, 0, 0, 1, ps, payload)
		for off := start; off < len(b); {
			h, _ := tds.ParseHeader(b[off:], tds.MaxPacketSize)
			packets++
			off += int(h.Length)
		}
		eoms++
	}
	return b, packets, eoms
}

func openWalk(t *testing.T) *TDSWalk {
	t.Helper()
	w, err := OpenTDSWalk(16)
	if err != nil {
		t.Fatalf("OpenTDSWalk: %v (run as root: the test needs CAP_BPF)", err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// The kernel walk of random answers, written in random pieces, agrees
// with the count of their packets and EOMs, and ends at a boundary.
func TestTDSWalkFollowsAnswers(t *testing.T) {
	w := openWalk(t)
	for _, ps := range []int{512, 4096, 8000, tds.MaxPacketSize} {
		r := rand.New(rand.NewPCG(uint64(ps), 7))
		rx, tx := tcpPair(t)
		kw, err := w.Arm(rx)
		if err != nil {
			t.Fatal(err)
		}
		b, packets, eoms := answers(r, 40, ps)
		go func() {
			for off := 0; off < len(b); {
				k := min(len(b)-off, 1+r.IntN(3*ps))
				tx.Write(b[off : off+k])
				off += k
			}
		}()
		rx.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.CopyN(io.Discard, rx, int64(len(b))); err != nil {
			t.Fatal(err)
		}
		st, err := kw.State()
		if err != nil {
			t.Fatal(err)
		}
		want := WalkState{Usable: true, Bytes: uint64(len(b)), Packets: uint64(packets), EOMs: uint64(eoms), HVal: st.HVal}
		if st != want {
			t.Errorf("ps %d: state %+v, want %+v", ps, st, want)
		}
		kw.Close()
		if n := w.Len(); n != 0 {
			t.Errorf("ps %d: %d walks left after Close", ps, n)
		}
	}
}

// A header the relay would reject stops the walk for good (BAD): neither
// a REPLY, nor a PacketID out of step within a message.
func TestTDSWalkStopsAtBadHeader(t *testing.T) {
	w := openWalk(t)
	for name, corrupt := range map[string]func(b []byte){
		"type":     func(b []byte) { b[4096] = byte(tds.PacketSQLBatch) },
		"length":   func(b []byte) { b[4096+2], b[4096+3] = 0, 4 },
		"packetid": func(b []byte) { b[4096+6] = 9 },
	} {
		rx, tx := tcpPair(t)
		kw, err := w.Arm(rx)
		if err != nil {
			t.Fatal(err)
		}
		b := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 4096, make([]byte, 5*4096))
		corrupt(b)
		tx.Write(b)
		rx.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.CopyN(io.Discard, rx, int64(len(b)))
		st, err := kw.State()
		if err != nil {
			t.Fatal(err)
		}
		if st.Usable {
			t.Errorf("%s: state %+v is usable after a bad header", name, st)
		}
		kw.Close()
	}
}

// refWalk is the walk the kernel's must agree with: tds.ParseHeader's
// checks, REPLY packets only, PacketID one up within a message. bad: it
// stopped at a header.
func refWalk(b []byte) (st WalkState, bad bool) {
	var lastID byte
	for off := 0; off < len(b); {
		if st.HN < tds.HeaderLen {
			st.HVal = st.HVal<<8 | uint64(b[off])
			st.HN++
			off++
			if st.HN < tds.HeaderLen {
				continue
			}
			var hdr [8]byte
			for i := range hdr {
				hdr[i] = byte(st.HVal >> (8 * (7 - i)))
			}
			h, err := tds.ParseHeader(hdr[:], tds.MaxPacketSize)
			if err != nil || h.Type != tds.PacketReply || (st.Mid && h.PacketID != lastID+1) {
				return st, true
			}
			lastID = h.PacketID
			st.Left = int(h.Length) - tds.HeaderLen
		} else {
			k := min(st.Left, len(b)-off)
			st.Left -= k
			off += k
		}
		if st.Left == 0 {
			status := byte(st.HVal >> 48)
			st.HN = 0
			st.Packets++
			st.Mid = status&tds.StatusEOM == 0
			if !st.Mid {
				st.EOMs++
			}
		}
	}
	st.Bytes = uint64(len(b))
	st.Usable = true
	if st.HN == 0 {
		st.HVal = 0 // at a boundary the kernel's hval is the last header's: not compared
	}
	return st, false
}

// FuzzTDSWalk: whatever bytes the server sends, written in two pieces,
// the kernel's walk ends where the reference walk does, or has stopped
// (not usable) where the reference refused a header.
func FuzzTDSWalk(f *testing.F) {
	f.Add(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 512, make([]byte, 2000)), uint16(700))
	f.Add(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 4096, make([]byte, 100)), uint16(3))
	f.Add(append(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 512, make([]byte, 600)), 4, 0, 0), uint16(520))
	f.Add(tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 512, make([]byte, 10)), uint16(1))
	f.Add([]byte{4, 0, 0, 16, 0, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 4, 1, 0, 9, 0, 0, 7, 0, 9}, uint16(12))
	w, err := OpenTDSWalk(4)
	if err != nil {
		f.Fatalf("OpenTDSWalk: %v (run as root: the test needs CAP_BPF)", err)
	}
	defer w.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer l.Close()
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		if len(b) == 0 || len(b) > 256<<10 {
			return
		}
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		kw, err := w.Arm(s.(*net.TCPConn))
		if err != nil {
			t.Fatal(err)
		}
		defer kw.Close()
		k := int(cut) % (len(b) + 1)
		go func() {
			c.Write(b[:k])
			time.Sleep(time.Millisecond)
			c.Write(b[k:])
		}()
		s.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.CopyN(io.Discard, s, int64(len(b))); err != nil {
			t.Fatal(err)
		}
		got, err := kw.State()
		if err != nil {
			t.Fatal(err)
		}
		want, bad := refWalk(b)
		if bad {
			if got.Usable {
				t.Fatalf("the reference refused a header; the kernel's walk is usable: %+v", got)
			}
			return
		}
		if got.HN == 0 {
			got.HVal = 0
		}
		if got != want {
			t.Fatalf("kernel %+v, reference %+v", got, want)
		}
	})
}

// Without CAP_BPF the header walker does not load: OpenTDSWalk fails with
// ErrUnavailable naming what is missing, and NewTDSWalk logs exactly one
// warning and returns nil (pooled relays then peek). The capabilities are
// dropped on one locked OS thread only, never given back to the runtime.
func TestTDSWalkWithoutCaps(t *testing.T) {
	type out struct {
		err  error
		nilW bool
		log  string
	}
	var o out
	withoutCaps(t, func() {
		w, err := OpenTDSWalk(16)
		if w != nil {
			w.Close()
		}
		var buf bytes.Buffer
		nw := NewTDSWalk(16, slog.New(slog.NewTextHandler(&buf, nil)))
		o = out{err: err, nilW: nw == nil, log: buf.String()}
	})
	if !errors.Is(o.err, ErrUnavailable) || !strings.Contains(o.err.Error(), "CAP_BPF") {
		t.Errorf("OpenTDSWalk without capabilities: %v; want ErrUnavailable naming CAP_BPF", o.err)
	}
	if !o.nilW || strings.Count(o.log, "\n") != 1 || !strings.Contains(o.log, "level=WARN") || !strings.Contains(o.log, "peek") {
		t.Errorf("NewTDSWalk without capabilities: nil %v, logged %q; want nil and one warning", o.nilW, o.log)
	}
}
