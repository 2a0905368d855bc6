package tds

import (
	"bytes"
	"reflect"
	"testing"
)

// The seed corpora live in testdata/fuzz/<Target>/ and come from the
// MS-TDS examples and the real-client captures. Run a target with e.g.
//
//	go test -run '^$' -fuzz '^FuzzLogin7$' -fuzztime 5m ./pkg/tds/

// FuzzHeader drives the packet header parser and message reassembly.
func FuzzHeader(f *testing.F) {
	f.Add([]byte{0x12, 0x01, 0x00, 0x08, 0, 0, 1, 0}, 4096, 0)
	f.Fuzz(func(t *testing.T, b []byte, packetSize, maxMsg int) {
		if h, err := ParseHeader(b, packetSize); err == nil {
			if h.Length < HeaderLen {
				t.Fatalf("accepted length %d", h.Length)
			}
			var out [8]byte
			h.Put(out[:])
			if !bytes.Equal(out[:], b[:8]) {
				t.Fatalf("header round trip %x vs %x", out, b[:8])
			}
		}
		if maxMsg < 0 || maxMsg > 1<<20 {
			maxMsg = 1 << 20
		}
		r := NewMessageReader(bytes.NewReader(b), packetSize, maxMsg)
		for i := 0; i < 64; i++ {
			m, err := r.ReadMessage()
			if err != nil {
				return
			}
			if len(m.Data) > r.MaxMessage && r.MaxMessage > 0 {
				t.Fatalf("message of %d bytes over cap %d", len(m.Data), r.MaxMessage)
			}
		}
	})
}

// FuzzPrelogin checks that any PRELOGIN that parses re-encodes to a
// message that parses to the same options.
func FuzzPrelogin(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePrelogin(b)
		if err != nil {
			return
		}
		p.Encryption()
		p.Version()
		p.InstOpt()
		p.ThreadID()
		p.TraceID()
		q, err := ParsePrelogin(p.Append(nil))
		if err != nil {
			t.Fatalf("re-encoded PRELOGIN fails: %v", err)
		}
		if len(p.Options) != len(q.Options) {
			t.Fatalf("options %d vs %d", len(p.Options), len(q.Options))
		}
		for i := range p.Options {
			if p.Options[i].Token != q.Options[i].Token || !bytes.Equal(p.Options[i].Data, q.Options[i].Data) {
				t.Fatalf("option %d differs", i)
			}
		}
	})
}

// FuzzLogin7 checks that any LOGIN7 that parses rebuilds to one that
// parses to the same fields.
func FuzzLogin7(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLogin7(b)
		if err != nil {
			return
		}
		l.Features()
		_ = l.LogValue().String()
		l2, err := ParseLogin7(l.Append(nil))
		if err != nil {
			t.Fatalf("rebuilt LOGIN7 fails: %v", err)
		}
		if !reflect.DeepEqual(canonLogin(l), canonLogin(l2)) {
			t.Fatalf("rebuild differs:\n%+v\n%+v", l, l2)
		}
	})
}

// canonLogin normalizes what a rebuild may legitimately change: empty
// versus nil slices, and text that is not valid UTF-16 (decoded to U+FFFD
// once, then stable).
func canonLogin(l *Login7) Login7 {
	c := *l
	if len(c.SSPI) == 0 {
		c.SSPI = nil
	}
	if len(c.FeatureExt) == 0 || c.OptionFlags3&OptFlag3Extension == 0 {
		c.FeatureExt = nil
	}
	return c
}

// FuzzTokens drives the token reader over response streams, in both the
// TDS 7.4 and 7.1 layouts.
func FuzzTokens(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []uint32{Version74, Version71b} {
			r := NewTokenReader(b, v)
			var meta *ColMetadata
			for i := 0; r.More() && i < 10000; i++ {
				before := r.Offset()
				tok, err := r.Next()
				if err != nil {
					break
				}
				if r.Offset() <= before {
					t.Fatalf("no progress at %d", before)
				}
				if tok.ColMeta != nil {
					meta = tok.ColMeta
				}
				for i, val := range tok.Row {
					// Decoding values must not panic either.
					DecodeValue(&meta.Columns[i].Type, val)
				}
			}
		}
	})
}

// FuzzRequests drives the request parsers a server-side reader uses:
// SQLBatch, RPC (with value decoding) and transaction manager requests.
func FuzzRequests(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseSQLBatch(b)
		ParseTransMgrReq(b)
		if r, err := ParseRPC(b); err == nil {
			for _, c := range r.Calls {
				for _, p := range c.Params {
					DecodeValue(&p.Type, p.Value)
				}
			}
		}
	})
}
