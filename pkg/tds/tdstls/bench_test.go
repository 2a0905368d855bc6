package tdstls

import (
	"io"
	"testing"
)

// BenchmarkRoundTrip measures a 64-byte request and 4 KiB reply over a
// wrapped-mode session on loopback, in exact-record mode and with
// AllowReadAhead: the cost of the second read per record.
func BenchmarkRoundTrip(b *testing.B) {
	for _, mode := range []string{"exact", "readahead"} {
		b.Run(mode, func(b *testing.B) {
			t := &testing.T{}
			tc := ecdsaCert(b)
			p := handshakePair(t, serverConfig(tc), clientConfig(tc), 0)
			if mode == "readahead" {
				_ = AllowReadAhead(p.cli)
				_ = AllowReadAhead(p.srv)
			}
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
			b.StopTimer()
			p.cli.Close()
			p.srv.Close()
		})
	}
}
