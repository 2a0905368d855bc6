package tdstls

import (
	"io"
	"testing"
)

// BenchmarkRoundTrip measures a 64-byte request and a 4 KiB reply over a
// wrapped-mode session on loopback, in exact-record mode and with
// AllowReadAhead: the cost of the second read per record.
func BenchmarkRoundTrip(b *testing.B) {
	for _, mode := range []string{"exact", "readahead"} {
		b.Run(mode, func(b *testing.B) {
			p := benchPair(b, mode)
			req, resp := make([]byte, 64), make([]byte, 4096)
			go func() {
				buf := make([]byte, 64)
				for {
					if _, err := io.ReadFull(p.srv, buf); err != nil {
						return
					}
					if _, err := p.srv.Write(resp); err != nil {
						return
					}
				}
			}()
			got := make([]byte, len(resp))
			b.ResetTimer()
			for range b.N {
				if _, err := p.cli.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(p.cli, got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBulk measures one-way throughput in 32 KiB writes.
func BenchmarkBulk(b *testing.B) {
	for _, mode := range []string{"exact", "readahead"} {
		b.Run(mode, func(b *testing.B) {
			p := benchPair(b, mode)
			chunk := make([]byte, 32<<10)
			b.SetBytes(int64(len(chunk)))
			go func() {
				for range b.N {
					if _, err := p.srv.Write(chunk); err != nil {
						return
					}
				}
			}()
			got := make([]byte, len(chunk))
			b.ResetTimer()
			for range b.N {
				if _, err := io.ReadFull(p.cli, got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchPair(b *testing.B, mode string) pair {
	tc := ecdsaCert(b)
	p := handshakePair(b, serverConfig(tc), clientConfig(tc), 0)
	if mode == "readahead" {
		_ = AllowReadAhead(p.cli)
		_ = AllowReadAhead(p.srv)
	}
	b.Cleanup(func() { p.cli.Close(); p.srv.Close() })
	return p
}
