package relay

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// framedHarness: app client ⇄ [clientLeg | Framed | serverLeg] ⇄ app server.
type framedHarness struct {
	client, server net.Conn // the apps' ends
	res            chan FramedResult
}

func startFramed(t *testing.T, o FramedOptions) *framedHarness {
	appClient, clientLeg := pair(t)
	serverLeg, appServer := pair(t)
	t.Cleanup(func() { appClient.Close(); clientLeg.Close(); serverLeg.Close(); appServer.Close() })
	h := &framedHarness{client: appClient, server: appServer, res: make(chan FramedResult, 1)}
	go func() { h.res <- Framed(clientLeg, serverLeg, clientLeg, serverLeg, o) }()
	return h
}

func (h *framedHarness) result(t *testing.T) FramedResult {
	t.Helper()
	select {
	case r := <-h.res:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("Framed did not return")
		return FramedResult{}
	}
}

func readMsg(t *testing.T, c net.Conn) tds.Message {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, err := tds.NewMessageReader(c, tds.MaxPacketSize, 0).ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func doneTok(status uint16) []byte {
	return tds.AppendDone(nil, tds.TokenDone, tds.Done{Status: status}, tds.Version74)
}

func TestFramedResetAndStrip(t *testing.T) {
	h := startFramed(t, FramedOptions{Reset: true, Version: tds.Version74})
	batch := tds.AppendSQLBatch(nil, nil, "SELECT 1")
	for i := range 2 {
		h.client.Write(tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, batch))
		m := readMsg(t, h.server)
		if reset := m.Status&tds.StatusResetConnection != 0; reset != (i == 0) {
			t.Fatalf("request %d: RESETCONNECTION %v", i, reset)
		}
		answer := doneTok(0)
		if i == 0 {
			answer = append(tds.AppendEnvChange(nil, tds.EnvChange{Type: tds.EnvResetConnAck}), answer...)
		}
		h.server.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 4096, answer))
		got := readMsg(t, h.client)
		if !bytes.Equal(got.Data, doneTok(0)) {
			t.Fatalf("answer %d: % x", i, got.Data)
		}
	}
	h.client.Close()
	r := h.result(t)
	if !r.ResetSent || !r.ResetAcked || r.InFlight() || r.Broken != BrokenNone || r.ClientMessages != 2 || r.ServerMessages != 2 {
		t.Fatalf("%+v", r)
	}
	// The backend was left open and clean.
	h.server.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 4096, doneTok(0)))
}

func TestFramedInFlightWhenClientLeaves(t *testing.T) {
	h := startFramed(t, FramedOptions{Version: tds.Version74})
	h.client.Write(tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "WAITFOR DELAY '00:00:05'")))
	readMsg(t, h.server)
	h.client.Close()
	r := h.result(t)
	if !r.InFlight() || r.Broken != BrokenNone || r.ClientMessages != 1 || r.ServerMessages != 0 {
		t.Fatalf("%+v", r)
	}
	if r.Ended != SideClient {
		t.Fatalf("ended by %v", r.Ended)
	}
	// The server leg is still open: the relay stopped reading it.
	if _, err := h.server.Write([]byte{1}); err != nil {
		t.Fatal(err)
	}
}

func TestFramedAttention(t *testing.T) {
	h := startFramed(t, FramedOptions{Version: tds.Version74})
	h.client.Write(tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "WAITFOR DELAY '00:00:05'")))
	readMsg(t, h.server)
	h.client.Write(tds.AppendPackets(nil, tds.PacketAttention, 0, 0, 1, 4096, nil))
	if m := readMsg(t, h.server); m.Type != tds.PacketAttention {
		t.Fatalf("type %x", m.Type)
	}
	// The interrupted answer ends, then DONE_ATTN in a message of its own,
	// split over two packets (the DONE itself straddles them).
	h.server.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 4096, doneTok(tds.DoneError)))
	ack := doneTok(tds.DoneAttn)
	first := tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 4096, ack[:5])
	first[1] &^= tds.StatusEOM
	h.server.Write(first)
	time.Sleep(20 * time.Millisecond)
	h.server.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 2, 4096, ack[5:]))
	readMsg(t, h.client)
	if m := readMsg(t, h.client); !IsDoneAttn(m.Data, tds.Version74) {
		t.Fatalf("ack % x", m.Data)
	}
	h.client.Close()
	r := h.result(t)
	if r.InFlight() || r.Attention || r.Broken != BrokenNone {
		t.Fatalf("%+v", r)
	}
}

func TestFramedMARS(t *testing.T) {
	h := startFramed(t, FramedOptions{})
	h.client.Write([]byte{PacketSMP, 1, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	r := h.result(t)
	if r.Broken != BrokenMARS {
		t.Fatalf("%+v", r)
	}
}

func TestFramedServerCloses(t *testing.T) {
	h := startFramed(t, FramedOptions{})
	h.server.Close()
	r := h.result(t)
	if r.Broken != BrokenServerClosed || r.Ended != SideServer {
		t.Fatalf("%+v", r)
	}
	h.client.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := h.client.Read(make([]byte, 1)); err == nil {
		t.Fatal("the client was not closed")
	}
}

func TestFramedClientLeavesMidMessage(t *testing.T) {
	h := startFramed(t, FramedOptions{})
	p := tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, 4096, tds.AppendSQLBatch(nil, nil, "SELECT 1"))
	p[1] &^= tds.StatusEOM
	h.client.Write(p)
	readFull := make([]byte, len(p))
	h.server.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.ReadFull(h.server, readFull)
	h.client.Close()
	if r := h.result(t); r.Broken != BrokenClientPartial {
		t.Fatalf("%+v", r)
	}
}

// TestFramedLargePackets: chunks of spliceMin bytes or more are spliced; every byte
// arrives in order both ways.
func TestFramedLargePackets(t *testing.T) {
	h := startFramed(t, FramedOptions{})
	up := make([]byte, 200<<10)
	down := make([]byte, 1<<20)
	rand.Read(up)
	rand.Read(down)
	go h.client.Write(tds.AppendPackets(nil, tds.PacketSQLBatch, 0, 0, 1, tds.MaxPacketSize, up))
	if m := readMsg(t, h.server); !bytes.Equal(m.Data, up) {
		t.Fatal("request corrupted")
	}
	go h.server.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, 8000, down))
	if m := readMsg(t, h.client); !bytes.Equal(m.Data, down) {
		t.Fatal("answer corrupted")
	}
	h.client.Close()
	r := h.result(t)
	if r.InFlight() || r.Broken != BrokenNone || r.Mode != ModeFramed {
		t.Fatalf("%+v", r)
	}
}
