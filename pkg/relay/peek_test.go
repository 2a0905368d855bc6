package relay

import (
	"bytes"
	"crypto/rand"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// queued writes s into a fresh loopback connection and returns the
// receiving end once all of s is queued on it.
func queued(t testing.TB, s []byte) (rc syscall.RawConn, fd int) {
	t.Helper()
	a, b := pair(t)
	t.Cleanup(func() { a.Close(); b.Close() })
	b.SetReadBuffer(4 << 20)
	go a.Write(s)
	r, err := b.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		r.Control(func(f uintptr) { fd = int(f); n, _ = unix.IoctlGetInt(fd, unix.SIOCINQ) })
		if n >= len(s) {
			return r, fd
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d bytes queued", n, len(s))
		}
		time.Sleep(time.Millisecond)
	}
}

// peekMode is how walkQueued finds the headers: by peeking whole runs,
// or by hopping from header to header, whatever the packet size.
type peekMode int

const (
	modeRun peekMode = iota
	modeHop
)

var peekModes = []peekMode{modeRun, modeHop}

func (m peekMode) String() string { return [...]string{"run", "hop"}[m] }

// setPeekMode makes walkQueued find headers the way m says, until the
// returned function restores the default.
func setPeekMode(m peekMode) (restore func()) {
	h := hopMin
	hopMin = 1 << 30
	if m == modeHop {
		hopMin = 0
	}
	return func() { hopMin = h }
}

// walkQueuedLike walks s queued on a socket, in chunks of at most chunk
// bytes (each chunk consumed after it is walked, as a splice would),
// finding headers the way mode says, and returns the log, the bytes
// accepted and the walker's error.
func walkQueuedLike(t testing.TB, s []byte, chunk int, mode peekMode) (*walkLog, int, error) {
	defer setPeekMode(mode)()
	rc, fd := queued(t, s)
	var w walker
	l := &walkLog{}
	v := l.visitor()
	v.body = nil // the spliced path sees no body
	total := 0
	for total < len(s) {
		m, werr, err := walkQueued(rc, &w, v, min(chunk, len(s)-total))
		if err != nil {
			t.Fatal(err)
		}
		// Take the walked bytes off, as the splice does.
		for k := m; k > 0; {
			n, err := unix.Read(fd, make([]byte, k))
			if err != nil {
				t.Fatal(err)
			}
			k -= n
		}
		total += m
		if werr != nil {
			return l, total, werr
		}
		if m == 0 {
			t.Fatalf("no progress at %d of %d", total, len(s))
		}
	}
	if off, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF); err == nil && off != -1 {
		t.Fatalf("SO_PEEK_OFF left at %d", off)
	}
	return l, total, nil
}

// TestWalkQueuedMatchesWalk: headers found by peeking the queue — whole
// runs, or hopping header to header at offsets — are the ones a walk of
// the bytes in one piece finds, with chunks ending anywhere (inside a
// header included).
func TestWalkQueuedMatchesWalk(t *testing.T) {
	var s []byte
	for _, ps := range []int{4096, 16384, tds.MaxPacketSize, 512, tds.MaxPacketSize} {
		body := make([]byte, 3*ps+ps/3)
		rand.Read(body)
		s = tds.AppendPackets(s, tds.PacketReply, 0, 0, 1, ps, body)
	}
	var w walker
	want := &walkLog{}
	if n, err := w.walk(s, want.visitor()); n != len(s) || err != nil {
		t.Fatal(n, err)
	}
	for _, mode := range peekModes {
		for _, chunk := range []int{len(s), 1 << 20, 100_003, 32771, 4099, 13} {
			l, n, err := walkQueuedLike(t, s, chunk, mode)
			if err != nil || n != len(s) || len(l.ends) != len(want.ends) || len(l.headers) != len(want.headers) {
				t.Fatalf("%v chunk %d: %d of %d bytes, %v, %d ends (want %d)", mode, chunk, n, len(s), err, len(l.ends), len(want.ends))
			}
			for i := range l.ends {
				if l.ends[i] != want.ends[i] {
					t.Fatalf("%v chunk %d: packet %d: %+v, want %+v", mode, chunk, i, l.ends[i], want.ends[i])
				}
			}
		}
	}
}

// TestWalkQueuedRejects: a header with a length below 8, or above the
// largest packet, met while hopping or peeking a run: the bytes before it
// are accepted, and the walker says why it stopped.
func TestWalkQueuedRejects(t *testing.T) {
	good := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, tds.MaxPacketSize, make([]byte, 100_000))
	good[1] &^= tds.StatusEOM
	for _, bad := range [][]byte{
		{byte(tds.PacketReply), 0, 0, 4, 0, 0, 0, 0},       // length 4
		{byte(tds.PacketReply), 0, 0xff, 0xff, 0, 0, 0, 0}, // 65535
	} {
		s := append(append(append([]byte{}, good...), bad...), make([]byte, 64)...)
		for _, mode := range peekModes {
			_, n, err := walkQueuedLike(t, s, 1<<20, mode)
			if err == nil || n != len(good) {
				t.Fatalf("%v, % x: accepted %d (want %d), %v", mode, bad, n, len(good), err)
			}
		}
	}
}

// TestWalkQueuedWithoutPeekOffset: where the kernel refuses SO_PEEK_OFF,
// a chunk ends where a peek at offset 0 cannot reach, and the headers
// found are the same.
func TestWalkQueuedWithoutPeekOffset(t *testing.T) {
	defer noPeekOff.Store(noPeekOff.Load())
	noPeekOff.Store(true)
	body := make([]byte, 500_000)
	s := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, tds.MaxPacketSize, body)
	for _, mode := range peekModes {
		l, n, err := walkQueuedLike(t, s, 1<<20, mode)
		if err != nil || n != len(s) || len(l.ends) != (len(body)+tds.MaxPacketSize-9)/(tds.MaxPacketSize-8) {
			t.Fatalf("%v: %d of %d, %v, %d ends", mode, n, len(s), err, len(l.ends))
		}
	}
}

// TestFramedBulkHopsHeaders: an answer of 16 KiB packets (hopped from
// header to header) written in pieces cut inside headers, bodies and
// between packets, then a second answer: every byte arrives, both are
// counted, and the relay leaves SO_PEEK_OFF off.
func TestFramedBulkHopsHeaders(t *testing.T) {
	appClient, clientLeg := pair(t)
	serverLeg, appServer := pair(t)
	t.Cleanup(func() { appClient.Close(); clientLeg.Close(); serverLeg.Close(); appServer.Close() })
	res := make(chan FramedResult, 1)
	go func() {
		res <- Framed(clientLeg, serverLeg, clientLeg, serverLeg, FramedOptions{Version: tds.Version74})
	}()
	big := make([]byte, 6<<20)
	rand.Read(big)
	ans := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 16384, big)
	ans = tds.AppendPackets(ans, tds.PacketReply, 0, 0, 1, 16384, doneTok(0))
	req := tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "SELECT big"))
	for range 2 {
		appClient.Write(req)
		readMsg(t, appServer)
	}
	go func() {
		for i, k := 0, 0; i < len(ans); k++ {
			n := min([]int{70_003, 16384 + 3, 5, 200_000}[k%4], len(ans)-i)
			appServer.Write(ans[i : i+n])
			i += n
			if k%7 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	got := make([]byte, len(ans))
	appClient.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := ioReadFull(appClient, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ans) {
		t.Fatal("answer changed on the way")
	}
	appClient.Close()
	var r FramedResult
	select {
	case r = <-res:
	case <-time.After(5 * time.Second):
		t.Fatal("Framed did not return")
	}
	if r.InFlight() || r.Broken != BrokenNone || r.ClientMessages != 2 || r.ServerMessages != 2 || r.ServerToClient != int64(len(ans)) {
		t.Fatalf("%+v", r)
	}
	rc, _ := serverLeg.SyscallConn()
	rc.Control(func(fd uintptr) {
		if off, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEEK_OFF); err == nil && off != -1 {
			t.Errorf("SO_PEEK_OFF left at %d on the backend", off)
		}
	})
}

// TestFramedBadHeaderInSplicedRun: a header of length 4 after a run of
// large packets that is spliced: the packets before it reach the client,
// nothing after it, and the backend is marked broken.
func TestFramedBadHeaderInSplicedRun(t *testing.T) {
	h := startFramed(t, FramedOptions{Version: tds.Version74})
	h.client.Write(tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "SELECT big")))
	readMsg(t, h.server)
	good := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 16384, make([]byte, 64*(16384-8)))
	good[len(good)-16384+1] &^= tds.StatusEOM // not the end of the answer
	s := append(append([]byte{}, good...), byte(tds.PacketReply), 0, 0, 4, 0, 0, 0, 0)
	s = append(s, make([]byte, 100)...)
	go h.server.Write(s)
	got := make([]byte, len(good)+1)
	h.client.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := ioReadFull(h.client, got)
	if n != len(good) || !bytes.Equal(got[:n], good) {
		t.Fatalf("client got %d bytes, want the %d before the bad header", n, len(good))
	}
	if r := h.result(t); r.Broken != BrokenProtocol || r.ServerToClient != int64(len(good)) {
		t.Fatalf("%+v", r)
	}
}

// FuzzWalkQueued: any bytes queued on a socket, walked by peeking runs or
// hopping header to header, in chunks of any size, find what a walk of
// them in one piece finds, packet for packet.
func FuzzWalkQueued(f *testing.F) {
	s, _ := walkStream()
	f.Add(s, uint16(100), true)
	f.Add(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 16384, make([]byte, 40_000)), uint16(16390), true)
	f.Add(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 512, make([]byte, 2000)), uint16(7), false)
	f.Add([]byte{byte(tds.PacketReply), 0, 0, 4, 0, 0, 0, 0}, uint16(8), true)
	f.Fuzz(func(t *testing.T, s []byte, chunk uint16, hop bool) {
		if len(s) == 0 || len(s) > 1<<20 || chunk == 0 {
			return
		}
		var w walker
		want := &walkLog{}
		n1, err1 := w.walk(s, want.visitor())
		mode := modeRun
		if hop {
			mode = modeHop
		}
		l, n2, err2 := walkQueuedLike(t, s, int(chunk), mode)
		if (err1 == nil) != (err2 == nil) || len(l.ends) != len(want.ends) {
			t.Fatalf("%v: one piece: %d %v %d ends; queued: %d %v %d ends", mode, n1, err1, len(want.ends), n2, err2, len(l.ends))
		}
		for i := range l.ends {
			if l.ends[i] != want.ends[i] {
				t.Fatalf("%v: packet %d: %+v, want %+v", mode, i, l.ends[i], want.ends[i])
			}
		}
		if err1 == nil && n2 != len(s) {
			t.Fatalf("%v: accepted %d of %d", mode, n2, len(s))
		}
		if err1 != nil && (n2 < n1 || n2 > n1+tds.HeaderLen-1) {
			t.Fatalf("%v: queued walk accepted %d, one piece stopped at %d", mode, n2, n1)
		}
	})
}

// TestWalkQueuedAllocs: hopping over 256 packets allocates per call, not
// per packet.
func TestWalkQueuedAllocs(t *testing.T) {
	defer func(h int) { hopMin = h }(hopMin)
	hopMin = 0
	s := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 4096, make([]byte, 256*4088))
	rc, _ := queued(t, s)
	ends := 0
	v := &visitor{
		header: func(hdr []byte) (tds.Header, error) { return tds.ParseHeader(hdr, tds.MaxPacketSize) },
		end:    func(tds.Header) { ends++ },
	}
	allocs := testing.AllocsPerRun(5, func() {
		var w walker
		if m, werr, err := walkQueued(rc, &w, v, len(s)); m != len(s) || werr != nil || err != nil {
			t.Fatal(m, werr, err)
		}
	})
	if ends != 6*256 || allocs > 16 {
		t.Fatalf("%d packets ended, %.0f allocations per walk of 256 packets", ends, allocs)
	}
}
