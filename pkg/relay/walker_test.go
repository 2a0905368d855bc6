package relay

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/certutil"
	"github.com/tdsgate/tdsgate/pkg/tds"
)

// walkLog records what a walker found.
type walkLog struct {
	headers []tds.Header
	ends    []tds.Header
	body    []byte
}

func (l *walkLog) visitor() *visitor {
	return &visitor{
		header: func(hdr []byte) (tds.Header, error) {
			if hdr[0] == PacketSMP {
				return tds.Header{}, errMARS
			}
			h, err := tds.ParseHeader(hdr, tds.MaxPacketSize)
			if err == nil {
				l.headers = append(l.headers, h)
			}
			return h, err
		},
		body: func(p []byte) { l.body = append(l.body, p...) },
		end:  func(h tds.Header) { l.ends = append(l.ends, h) },
	}
}

// stream is three messages: a two-packet request, an ATTENTION (a packet
// with no body), and a one-packet request.
func walkStream() (stream, bodies []byte) {
	a := bytes.Repeat([]byte("a"), 600)
	b := []byte("select 2")
	s := tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 512, a) // 2 packets: 504 + 96
	s = tds.AppendPackets(s, tds.PacketAttention, 0, 0, 1, 4096, nil)
	s = tds.AppendPackets(s, tds.PacketSQLBatch, 0, 0, 1, 4096, b)
	return s, append(append([]byte{}, a...), b...)
}

// TestWalkerSplitAnywhere walks the same stream cut into two and three
// chunks at every possible place (headers split across reads included):
// every header, every end of packet and every body byte is found, EOM on
// the right packets, and the walker ends at a boundary.
func TestWalkerSplitAnywhere(t *testing.T) {
	s, bodies := walkStream()
	check := func(t *testing.T, l *walkLog, w *walker) {
		t.Helper()
		if len(l.headers) != 4 || len(l.ends) != 4 {
			t.Fatalf("%d headers, %d ends", len(l.headers), len(l.ends))
		}
		eoms := []bool{false, true, true, true}
		types := []tds.PacketType{tds.PacketSQLBatch, tds.PacketSQLBatch, tds.PacketAttention, tds.PacketSQLBatch}
		for i, h := range l.ends {
			if h.EOM() != eoms[i] || h.Type != types[i] {
				t.Fatalf("packet %d: %+v", i, h)
			}
		}
		if !bytes.Equal(l.body, bodies) {
			t.Fatalf("bodies %q", l.body)
		}
		if !w.atBoundary() {
			t.Fatal("not at a boundary at the end")
		}
	}
	for i := 0; i <= len(s); i++ {
		for j := i; j <= len(s); j += 7 {
			var w walker
			l := &walkLog{}
			v := l.visitor()
			for _, c := range [][]byte{s[:i], s[i:j], s[j:]} {
				if n, err := w.walk(c, v); err != nil || n != len(c) {
					t.Fatalf("cut %d,%d: %d of %d, %v", i, j, n, len(c), err)
				}
				if w.atBoundary() && w.rest() != tds.HeaderLen {
					t.Fatalf("cut %d,%d: rest %d at boundary %v", i, j, w.rest(), w.atBoundary())
				}
			}
			check(t, l, &w)
		}
	}
}

// TestWalkerSkipBody: body bytes skipped unseen (spliced) keep the walker
// in step, and the packet's end is still found.
func TestWalkerSkipBody(t *testing.T) {
	s := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 1000, make([]byte, 1500))
	var w walker
	l := &walkLog{}
	v := l.visitor()
	if n, _ := w.walk(s[:10], v); n != 10 || !w.inBody() || w.rest() != 990 {
		t.Fatalf("n %d rest %d", n, w.rest())
	}
	w.skipBody(990, v)
	if !w.atBoundary() || len(l.ends) != 1 || l.ends[0].EOM() {
		t.Fatalf("%+v", l.ends)
	}
	if n, _ := w.walk(s[1000:], v); n != len(s)-1000 || len(l.ends) != 2 || !l.ends[1].EOM() {
		t.Fatalf("%d %+v", n, l.ends)
	}
}

// TestWalkerRejects: a rejected header stops the walk at its first byte,
// even when it straddles two chunks.
func TestWalkerRejects(t *testing.T) {
	good := tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, []byte("x"))
	bad := []byte{PacketSMP, 1, 0, 16, 0, 0, 0, 0}
	s := append(append([]byte{}, good...), bad...)
	var w walker
	l := &walkLog{}
	if n, err := w.walk(s, l.visitor()); n != len(good) || !errors.Is(err, errMARS) {
		t.Fatalf("%d %v", n, err)
	}
	w = walker{}
	v := l.visitor()
	if n, err := w.walk(s[:len(good)+3], v); n != len(good)+3 || err != nil {
		t.Fatalf("%d %v", n, err)
	}
	if n, err := w.walk(s[len(good)+3:], v); n != 0 || !errors.Is(err, errMARS) {
		t.Fatalf("%d %v", n, err)
	}
	w = walker{}
	short := []byte{byte(tds.PacketReply), 1, 0, 4, 0, 0, 0, 0} // length below 8
	if _, err := w.walk(short, l.visitor()); err == nil {
		t.Fatal("length 4 accepted")
	}
}

// FuzzWalker: any bytes, cut anywhere, walk the same as in one piece, and
// the walker never reads past a chunk.
func FuzzWalker(f *testing.F) {
	s, _ := walkStream()
	f.Add(s, uint16(3), uint16(17))
	f.Add(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 512, make([]byte, 2000)), uint16(8), uint16(520))
	f.Add([]byte{PacketSMP, 1, 0, 16}, uint16(1), uint16(2))
	f.Fuzz(func(t *testing.T, s []byte, a, b uint16) {
		i, j := min(int(a), len(s)), min(int(b), len(s))
		if i > j {
			i, j = j, i
		}
		var w1, w2 walker
		l1, l2 := &walkLog{}, &walkLog{}
		n1, err1 := w1.walk(s, l1.visitor())
		n2 := 0
		var err2 error
		v2 := l2.visitor()
		for _, c := range [][]byte{s[:i], s[i:j], s[j:]} {
			k, err := w2.walk(c, v2)
			if k > len(c) || k < 0 {
				t.Fatalf("accepted %d of %d", k, len(c))
			}
			if err != nil {
				// The rejected header began k bytes into this chunk, or
				// in an earlier one.
				n2 += k
				err2 = err
				break
			}
			n2 += k
		}
		if (err1 == nil) != (err2 == nil) || len(l1.ends) != len(l2.ends) || !bytes.Equal(l1.body, l2.body) {
			t.Fatalf("one piece: %d %v %d ends; cut: %d %v %d ends", n1, err1, len(l1.ends), n2, err2, len(l2.ends))
		}
		if err1 == nil && (n1 != len(s) || n2 != len(s)) {
			t.Fatalf("accepted %d and %d of %d", n1, n2, len(s))
		}
		// Cut, the bytes of a rejected header that came in earlier
		// chunks were accepted with them (at most HeaderLen-1).
		if err1 != nil && (n2 < n1 || n2 > n1+tds.HeaderLen-1) {
			t.Fatalf("cut walk accepted %d, one piece stopped at %d", n2, n1)
		}
	})
}

// TestFramedAnswerInOddChunks: the server's answer — many packets of
// several sizes, then a second message — reaches the relay in chunks cut
// anywhere (headers split across reads included); the client gets it byte
// for byte, and the relay counts both answers and stops at a boundary.
func TestFramedAnswerInOddChunks(t *testing.T) {
	h := startFramed(t, FramedOptions{Version: tds.Version74})
	body := make([]byte, 50_000)
	rand.Read(body)
	ans := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 512, body)
	ans = tds.AppendPackets(ans, tds.PacketReply, 0, 0, 1, 4096, doneTok(0))
	req := tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "SELECT 1"))
	for range 2 {
		h.client.Write(req)
		readMsg(t, h.server)
	}
	go func() {
		for i := 0; i < len(ans); {
			n := min(1+i%13*3, len(ans)-i) // 1, 4, 7, ... bytes
			h.server.Write(ans[i : i+n])
			i += n
			if i%5 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	got := make([]byte, len(ans))
	h.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := ioReadFull(h.client, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ans) {
		t.Fatal("answer changed on the way")
	}
	h.client.Close()
	r := h.result(t)
	if r.InFlight() || r.Broken != BrokenNone || r.ClientMessages != 2 || r.ServerMessages != 2 || r.ServerToClient != int64(len(ans)) {
		t.Fatalf("%+v", r)
	}
}

// TestFramedBulkSpliced: a large answer of 4 KiB packets arrives faster
// than one read takes it, so whole runs of packets are spliced; the
// messages after it are still counted one by one, and a request sent in
// many packets is counted once.
func TestFramedBulkSpliced(t *testing.T) {
	h := startFramed(t, FramedOptions{Version: tds.Version74})
	big := make([]byte, 8<<20)
	rand.Read(big)
	ans := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 4096, big)
	reqBody := make([]byte, 300<<10)
	rand.Read(reqBody)
	go h.client.Write(tds.AppendPackets(nil, tds.PacketBulkLoad, 0, 0, 1, 4096, reqBody))
	if m := readMsg(t, h.server); !bytes.Equal(m.Data, reqBody) {
		t.Fatal("request changed on the way")
	}
	go h.server.Write(ans)
	if m := readMsg(t, h.client); !bytes.Equal(m.Data, big) {
		t.Fatal("answer changed on the way")
	}
	h.client.Close()
	r := h.result(t)
	if r.InFlight() || r.Broken != BrokenNone || r.ClientMessages != 1 || r.ServerMessages != 1 {
		t.Fatalf("%+v", r)
	}
}

// TestFramedStopsAtBoundaryMidBulk: the client leaves while a large
// answer streams; the relay finishes the packet it is in and stops there,
// so what it left on the backend starts with a packet header.
// Packets of 4 KiB are found by peeking runs, of 16 KiB by hopping from
// header to header (peek.go).
func TestFramedStopsAtBoundaryMidBulk(t *testing.T) {
	for _, ps := range []int{4096, 16384} {
		t.Run(fmt.Sprint(ps), func(t *testing.T) { stopsAtBoundaryMidBulk(t, ps) })
	}
}

func stopsAtBoundaryMidBulk(t *testing.T, ps int) {
	h := startFramed(t, FramedOptions{Version: tds.Version74, StopTimeout: 2 * time.Second})
	h.client.Write(tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "SELECT big")))
	readMsg(t, h.server)
	pkt := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, ps, make([]byte, ps-tds.HeaderLen))
	pkt[1] &^= tds.StatusEOM
	stop := make(chan struct{})
	wrote := make(chan int, 1)
	go func() {
		n := 0
		defer func() { wrote <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// Half a packet at a time: the relay often sees a packet's
			// start without its end.
			for _, half := range [][]byte{pkt[:ps/2], pkt[ps/2:]} {
				h.server.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
				m, err := h.server.Write(half)
				n += m
				if err != nil {
					return
				}
			}
		}
	}()
	buf := make([]byte, 1<<20)
	h.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got := 0; got < 4<<20; {
		n, err := h.client.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	h.client.Close()
	r := h.result(t)
	close(stop)
	n := <-wrote
	if r.Broken != BrokenNone || !r.InFlight() || !r.ServerMidMessage {
		t.Fatalf("%+v", r)
	}
	// Everything the relay took ends on a packet boundary.
	if r.ServerToClient%int64(len(pkt)) != 0 {
		t.Fatalf("relay took %d bytes: not whole packets of %d", r.ServerToClient, len(pkt))
	}
	if int64(n) < r.ServerToClient {
		t.Fatalf("relay took %d, server wrote %d", r.ServerToClient, n)
	}
}

// TestFramedAttentionAckSplitAcrossReads: the DONE_ATTN arrives a byte at
// a time, its packet header split too; the ATTENTION is seen
// acknowledged.
func TestFramedAttentionAckSplitAcrossReads(t *testing.T) {
	h := startFramed(t, FramedOptions{Version: tds.Version74})
	h.client.Write(tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "WAITFOR DELAY '00:00:05'")))
	readMsg(t, h.server)
	h.client.Write(tds.AppendPackets(nil, tds.PacketAttention, 0, 0, 1, 4096, nil))
	readMsg(t, h.server)
	ack := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 4096, doneTok(tds.DoneAttn))
	for i := range ack {
		h.server.Write(ack[i : i+1])
		time.Sleep(2 * time.Millisecond)
	}
	if m := readMsg(t, h.client); !IsDoneAttn(m.Data, tds.Version74) {
		t.Fatalf("ack % x", m.Data)
	}
	h.client.Close()
	r := h.result(t)
	if r.InFlight() || r.Attention || r.Broken != BrokenNone || r.ClientMessages != 1 || r.ServerMessages != 1 {
		t.Fatalf("%+v", r)
	}
}

// TestFramedTLSBothLegs: with TLS on both legs the chunks are records;
// a reset request's answer is stripped of its ENVCHANGE 18, and a large
// answer arrives whole.
func TestFramedTLSBothLegs(t *testing.T) {
	cert, err := certutil.SelfSigned("framed-test")
	if err != nil {
		t.Fatal(err)
	}
	srvCfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	cliCfg := &tls.Config{InsecureSkipVerify: true}
	appClient, clientLeg := pair(t)
	serverLeg, appServer := pair(t)
	t.Cleanup(func() { appClient.Close(); clientLeg.Close(); serverLeg.Close(); appServer.Close() })
	cl, ac := tls.Server(clientLeg, srvCfg), tls.Client(appClient, cliCfg)
	sl, as := tls.Client(serverLeg, cliCfg), tls.Server(appServer, srvCfg)
	res := make(chan FramedResult, 1)
	go func() {
		res <- Framed(cl, sl, clientLeg, serverLeg, FramedOptions{Reset: true, Version: tds.Version74})
	}()
	ac.Write(tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "SELECT big")))
	if m := readMsg(t, as); m.Status&tds.StatusResetConnection == 0 {
		t.Fatal("no RESETCONNECTION")
	}
	big := make([]byte, 3<<20)
	rand.Read(big)
	go as.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 4096, append(resetAck[:], big...)))
	if m := readMsg(t, ac); !bytes.Equal(m.Data, big) {
		t.Fatalf("answer: %d bytes, want %d without the reset acknowledgement", len(m.Data), len(big))
	}
	ac.Close()
	select {
	case r := <-res:
		if r.InFlight() || r.Broken != BrokenNone || !r.ResetSent || !r.ResetAcked {
			t.Fatalf("%+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Framed did not return")
	}
}

func ioReadFull(c net.Conn, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := c.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestFramedBulkLargePackets: an answer in packets of the largest size is
// spliced body by body without being peeked; every byte arrives and the
// answer is counted once.
func TestFramedBulkLargePackets(t *testing.T) {
	h := startFramed(t, FramedOptions{Version: tds.Version74})
	big := make([]byte, 6<<20)
	rand.Read(big)
	h.client.Write(tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "SELECT big")))
	readMsg(t, h.server)
	go h.server.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, tds.MaxPacketSize, big))
	if m := readMsg(t, h.client); !bytes.Equal(m.Data, big) {
		t.Fatal("answer changed on the way")
	}
	h.client.Close()
	r := h.result(t)
	if r.InFlight() || r.Broken != BrokenNone || r.ClientMessages != 1 || r.ServerMessages != 1 {
		t.Fatalf("%+v", r)
	}
}
