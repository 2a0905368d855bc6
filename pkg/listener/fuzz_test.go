package listener

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// The seed corpus of FuzzProxyHeader lives in testdata/fuzz/FuzzProxyHeader/,
// one file per seed of proxySeeds. TestProxyFuzzCorpus checks the files match;
// regenerate them with
//
//	go test ./pkg/listener/ -run TestProxyFuzzCorpus -update-corpus
//
// Run the fuzzer with
//
//	go test ./pkg/listener/ -run '^$' -fuzz FuzzProxyHeader -fuzztime 2m
var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzProxyHeader from proxySeeds")

type proxySeed struct {
	name string
	in   []byte
}

func proxySeeds() []proxySeed {
	v4 := AppendProxyHeader(nil, false, v4Src, v4Dst, nil)
	tooLong := append([]byte{}, v4...)
	tooLong[14], tooLong[15] = 0x02, 0x01 // 513
	return []proxySeed{
		{"01-tcp4", append(append([]byte{}, v4...), "\x12\x01\x00\x2f"...)},
		{"02-tcp6", AppendProxyHeader(nil, false, v6Src, v6Dst, nil)},
		{"03-local", AppendProxyHeader(nil, true, netip.AddrPort{}, netip.AddrPort{}, nil)},
		{"04-tcp4-tlvs", AppendProxyHeader(nil, false, v4Src, v4Dst, sampleTLVs())},
		{"05-tcp6-tlvs", AppendProxyHeader(nil, false, v6Src, v6Dst, sampleTLVs())},
		{"06-local-tlvs", AppendProxyHeader(nil, true, netip.AddrPort{}, netip.AddrPort{}, sampleTLVs())},
		{"07-unspec", v2Raw(0x21, 0x00, nil)},
		{"08-unix", v2Raw(0x21, 0x31, make([]byte, 216))},
		{"09-truncated-fixed", v4[:13]},
		{"10-truncated-addrs", v4[:22]},
		{"11-v1-tcp4", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 54321 1433\r\n")},
		{"12-v1-unknown", []byte("PROXY UNKNOWN\r\n")},
		{"13-too-long", tooLong},
		{"14-udp4", v2Raw(0x21, 0x12, make([]byte, 12))},
		{"15-tds-prelogin", []byte("\x12\x01\x00\x2f\x00\x00\x01\x00\x00\x00\x1a\x00\x06\x01\x00\x20\x00\x01")},
		{"16-v4-mapped-tcp6", AppendProxyHeader(nil, false, netip.MustParseAddrPort("[::ffff:192.0.2.10]:1"), v6Dst, nil)},
	}
}

func corpusFile(in []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", in)
}

func TestProxyFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzProxyHeader")
	if *updateCorpus {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range proxySeeds() {
		path := filepath.Join(dir, s.name)
		want := corpusFile(s.in)
		if *updateCorpus {
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (regenerate with -update-corpus)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale (regenerate with -update-corpus)", path)
		}
	}
}

// FuzzProxyHeader feeds arbitrary bytes to ParseProxyHeader and checks that it
// never panics, consumes exactly the header on success and never more than
// the header announces, gives the same answer however the reader splits its
// reads, wraps ErrProxyHeader on every error, and that what it decodes
// encodes back to the same addresses.
func FuzzProxyHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := ParseProxyHeader(r)
		consumed := len(in) - r.Len()

		h1, err1 := ParseProxyHeader(iotest.OneByteReader(bytes.NewReader(in)))
		if (err == nil) != (err1 == nil) || h != h1 {
			t.Fatalf("whole reader: %+v, %v; one byte at a time: %+v, %v", h, err, h1, err1)
		}
		if err != nil {
			if !errors.Is(err, ErrProxyHeader) {
				t.Fatalf("error %v does not wrap ErrProxyHeader", err)
			}
			if consumed > proxyV2FixedLen+MaxProxyHeaderLen {
				t.Fatalf("consumed %d bytes on error", consumed)
			}
			return
		}
		if consumed != h.Len || h.Len < proxyV2FixedLen || h.Len > proxyV2FixedLen+MaxProxyHeaderLen {
			t.Fatalf("consumed %d, header length %d", consumed, h.Len)
		}
		if !bytes.Equal(in[:12], proxyV2Sig[:]) {
			t.Fatalf("accepted without the signature: %x", in[:16])
		}
		if h.Src.IsValid() != h.Dst.IsValid() || (h.Local && h.Src.IsValid()) {
			t.Fatalf("inconsistent header %+v", h)
		}
		if !h.Src.IsValid() {
			return
		}
		re, err := ParseProxyHeader(bytes.NewReader(AppendProxyHeader(nil, false, h.Src, h.Dst, nil)))
		if err != nil {
			t.Fatalf("re-encoded %+v does not parse: %v", h, err)
		}
		if unmap(re.Src) != unmap(h.Src) || unmap(re.Dst) != unmap(h.Dst) {
			t.Fatalf("round trip: %+v became %+v", h, re)
		}
		if _, err := io.ReadAll(r); err != nil {
			t.Fatal(err)
		}
	})
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
