package tds_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/tdsfacts"
)

// readMessage reassembles one request message and returns it with the
// headers of its packets.
func readMessage(t *testing.T, b []byte) (tds.Message, []tds.Header) {
	t.Helper()
	var hs []tds.Header
	for off := 0; off < len(b); {
		h, err := tds.ParseHeader(b[off:], tds.MaxPacketSize)
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
		off += int(h.Length)
	}
	m, err := tds.NewMessageReader(bytes.NewReader(b), tds.MaxPacketSize, 0).ReadMessage()
	if err != nil {
		t.Fatalf("reassemble: %v", err)
	}
	return m, hs
}

// TestRealRPCShapes checks the codec against every RPC shape real clients
// sent.
//
// The requests of a public capture of SQL Server traffic (tools/tdsfacts:
// sp_prepexec, sp_execute, batched calls, calls by name with and without
// ALL_HEADERS, an 8 KB call split over two packets, NVARCHAR(MAX)/PLP,
// GUID, DATETIME, VARBINARY, TINYINT, BIT, bigint and NULL-type
// parameters, RESETCONNECTION) are built with the encoder from their
// decoded content: each must have the captured length and packet headers,
// decode to exactly the calls it was built from, re-encode to the same
// bytes, and keep the traits the real bytes had. The MS-TDS example and
// the clients' own captures (go-sqlcmd, pytds) are decoded from their
// bytes.
func TestRealRPCShapes(t *testing.T) {
	procs := map[string]bool{}
	nrpc := 0
	for _, r := range tdsfacts.Requests {
		name := fmt.Sprintf("stream %d/%d %s", r.Stream, r.Seq, r.Name)
		wire := r.Packets()
		if len(wire) != r.Length {
			t.Errorf("%s: %d bytes on the wire, the capture has %d", name, len(wire), r.Length)
		}
		m, hs := readMessage(t, wire)
		if m.Type != r.Type || hs[0].Status != r.Status || hs[0].SPID != 0 || hs[0].PacketID != 1 {
			t.Errorf("%s: first header %+v, want type %v status 0x%02x", name, hs[0], r.Type, r.Status)
		}
		if tds.HasAllHeaders(m.Data) == r.NoAllHeaders {
			t.Errorf("%s: ALL_HEADERS present %v, want %v", name, !r.NoAllHeaders, r.NoAllHeaders)
		}
		if r.Type == tds.PacketSQLBatch {
			b, err := tds.ParseSQLBatch(m.Data)
			if err != nil || b.Text != r.SQL || (b.Headers == nil) != r.NoAllHeaders {
				t.Errorf("%s: %v %+v", name, err, b)
			}
			continue
		}
		nrpc++
		req, err := tds.ParseRPC(m.Data)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !reflect.DeepEqual(req.Calls, r.Calls) {
			t.Errorf("%s: decodes to other calls:\n got  %+v\n want %+v", name, req.Calls, r.Calls)
		}
		var again []byte
		if req.Headers == nil {
			again = tds.AppendRPC71(nil, req.Calls)
		} else {
			again = tds.AppendRPC(nil, req.Headers, req.Calls)
		}
		if !bytes.Equal(again, m.Data) {
			t.Errorf("%s: re-encodes to other bytes", name)
		}
		for _, c := range req.Calls {
			procs[c.ProcName] = true
			for i, p := range c.Params {
				if _, err := tds.DecodeValue(&p.Type, p.Value); err != nil {
					t.Errorf("%s: %s param %d (%q, type 0x%02x): %v", name, c.ProcName, i, p.Name, p.Type.Type, err)
				}
			}
		}
	}
	if nrpc != 16 {
		t.Errorf("%d RPC requests, the capture has 16", nrpc)
	}

	t.Run("multi-packet RPC", func(t *testing.T) {
		// 8339 bytes in two packets of a client with 8000-byte packets: the
		// first carries status 0x04 (undocumented, not EOM), the second
		// 0x01; the NVARCHAR(MAX) value travels as one PLP chunk of 8196
		// bytes inside a transaction (descriptor sent).
		r := tdsfacts.Get(5, 1)
		m, hs := readMessage(t, r.Packets())
		if len(hs) != 2 || hs[0].Length != 8000 || hs[0].Status != 0x04 || hs[1].Length != 339 || hs[1].Status != 0x01 || hs[1].PacketID != 2 {
			t.Fatalf("packets %+v", hs)
		}
		req, err := tds.ParseRPC(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if req.Headers == nil || req.Headers.TransactionDescriptor != 674309865510 {
			t.Errorf("ALL_HEADERS %+v", req.Headers)
		}
		p := req.Calls[0].Params[0]
		v, _ := tds.DecodeValue(&p.Type, p.Value)
		if p.Type.Size != tds.MaxLen || len(p.Value) != 8196 || v != tdsfacts.LongText {
			t.Errorf("@LongParam: size %d, %d bytes", p.Type.Size, len(p.Value))
		}
		if !bytes.Contains(m.Data, []byte{0x04, 0x20, 0, 0, 0, 0, 0, 0, 0x04, 0x20, 0, 0}) {
			t.Error("PLP length 8196 and one chunk of 8196 not on the wire")
		}
	})

	t.Run("batched calls", func(t *testing.T) {
		// Two sp_execute in one RPC, separated by 0xFF as the TDS 7.4
		// client sent them; a TDS 7.1 client separates them by 0x80. Both
		// decode to the same two calls.
		r := tdsfacts.Get(4, 4)
		sep72 := r.Payload()
		if i := bytes.Index(sep72, []byte{0x02, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x0C, 0}); i < 0 {
			t.Errorf("no 0xFF separator before the second call: %x", sep72)
		}
		sep71 := tds.AppendRPC71(nil, r.Calls)
		with71 := tds.AppendRPC71((&tds.AllHeaders{}).Append(nil), r.Calls)
		for _, b := range [][]byte{sep71, with71} {
			if !bytes.Contains(b, []byte{0x02, 0, 0, 0, 0x80, 0xFF, 0xFF, 0x0C, 0}) {
				t.Errorf("no 0x80 separator: %x", b)
			}
			req, err := tds.ParseRPC(b)
			if err != nil || !reflect.DeepEqual(req.Calls, r.Calls) {
				t.Errorf("0x80-separated calls: %v %+v", err, req)
			}
		}
	})

	t.Run("NULL-type and empty values", func(t *testing.T) {
		// Streams 8 and 9 send NULL-type (0x1F) parameters: a type byte with
		// no length and no value. An empty NVARCHAR is a zero length, not
		// NULL (0xFFFF).
		for _, c := range []struct {
			stream int
			nulls  []int
		}{{8, []int{1}}, {9, []int{1, 3}}} {
			r := tdsfacts.Get(c.stream, 1)
			req, err := tds.ParseRPC(r.Payload())
			if err != nil {
				t.Fatal(err)
			}
			ps := req.Calls[0].Params
			for _, i := range c.nulls {
				v, err := tds.DecodeValue(&ps[i].Type, ps[i].Value)
				if ps[i].Type.Type != tds.TypeNull || v != nil || err != nil {
					t.Errorf("stream %d param %d: %+v %v %v", c.stream, i, ps[i], v, err)
				}
			}
		}
		req, _ := tds.ParseRPC(tdsfacts.Get(8, 1).Payload())
		p := req.Calls[0].Params[2]
		if v, _ := tds.DecodeValue(&p.Type, p.Value); v != "" {
			t.Errorf("empty NVARCHAR decodes to %#v", v)
		}
		req, _ = tds.ParseRPC(tdsfacts.Get(10, 1).Payload())
		ps := req.Calls[0].Params
		if v, _ := tds.DecodeValue(&ps[4].Type, ps[4].Value); v != time.Date(1899, 12, 30, 0, 0, 0, 0, time.UTC) {
			t.Errorf("DATETIME %v", v)
		}
		for _, i := range []int{7, 8, 9, 12, 18, 19} {
			if ps[i].Value != nil {
				t.Errorf("stream 10 param %d: not NULL: %x", i, ps[i].Value)
			}
		}
		if ps[19].Status != tds.ParamByRef {
			t.Errorf("stream 10 last param status %d, want output", ps[19].Status)
		}
	})

	// The MS-TDS example and the clients' own captures, as bytes: every RPC
	// packet in them (pytds's sp_executesql with NVARCHAR(MAX) PLP
	// parameters, go-sqlcmd's calls).
	m, _ := readMessage(t, tds.LoadHex(t, tds.Vec("ms-tds/08-rpc-client-request.hex")))
	req, err := tds.ParseRPC(m.Data)
	if err != nil {
		t.Fatalf("MS-TDS RPC example: %v", err)
	}
	tds.RoundTripRPC(t, req)
	for _, c := range req.Calls {
		procs[c.ProcName] = true
	}
	logs, _ := filepath.Glob(tds.Vec("clientcap/*.log"))
	nlog := 0
	for _, f := range logs {
		for _, pkt := range tds.LoadCapture(t, f) {
			if len(pkt) < tds.HeaderLen || tds.PacketType(pkt[0]) != tds.PacketRPC {
				continue
			}
			nlog++
			m, _ := readMessage(t, pkt)
			r, err := tds.ParseRPC(m.Data)
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			for _, c := range r.Calls {
				procs[c.ProcName] = true
			}
			tds.RoundTripRPC(t, r)
		}
	}
	if nlog == 0 {
		t.Error("no RPC in the client captures")
	}
	for _, p := range []string{"sp_prepexec", "sp_execute", "sp_executesql", "p_GetBogusData", "proc_GetMyExampleTableSampleMetaData"} {
		if !procs[p] {
			t.Errorf("no %s call decoded; got %v", p, procs)
		}
	}
}
