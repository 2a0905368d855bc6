package server_test

import (
	"fmt"
	"testing"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
)

// BenchmarkSelect1 is one `SELECT 1` round trip on a logged-in session
// (plaintext, tdsclient, in-process stand-in over 127.0.0.1).
func BenchmarkSelect1(b *testing.B) {
	srv := start(b, nil)
	c := dial(b, srv, nil)
	b.ReportAllocs()
	for b.Loop() {
		r, err := c.Exec("SELECT 1", 0)
		if err != nil || r.Scalar() != int64(1) {
			b.Fatalf("%v %v", err, r)
		}
	}
}

// BenchmarkStream100k streams a 100,000-row INT result set and decodes
// every row (tdsclient.Stream: a few packets in memory at a time). One op
// is the whole result; MB/s counts the TDS payload, rows/s the rows.
func BenchmarkStream100k(b *testing.B) {
	for _, bc := range []struct {
		name, sql  string
		packetSize int
	}{
		{"generate_series", "SELECT value FROM generate_series(1, 100000)", 4096},
		{"standin_numbers", "SELECT TOP 100000 n FROM standin_numbers", 4096},
		{"standin_numbers/packet32k", "SELECT TOP 100000 n FROM standin_numbers", 32767},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := start(b, nil)
			c := dial(b, srv, func(o *tdsclient.Options) { o.PacketSize = bc.packetSize })
			var bytes int64
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Send(bc.sql, 0); err != nil {
					b.Fatal(err)
				}
				var meta *tds.ColMetadata
				rows, sum := 0, int64(0)
				bytes = 0
				err := c.Stream(func(t tds.Token) error {
					bytes += int64(len(t.Raw))
					switch {
					case t.ColMeta != nil:
						meta = t.ColMeta
					case t.Row != nil:
						v, err := tds.DecodeValue(&meta.Columns[0].Type, t.Row[0])
						if err != nil {
							return err
						}
						sum += v.(int64)
						rows++
					case t.Type == tds.TokenError:
						b.Fatal(t.Error)
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				if rows != 100000 || sum != 100000*100001/2 {
					b.Fatalf("%d rows, sum %d", rows, sum)
				}
			}
			b.SetBytes(bytes)
			b.ReportMetric(float64(100000*b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// BenchmarkBulkSource is the bench harness's bulk source alone: one
// "-- standin:bulk 64000000" answer (bulk_source, 4 KiB packets) read by
// tdsclient.StreamWire into a 256 KiB buffer, as the harness's raw client
// reads it, in one process over 127.0.0.1. MB/s counts wire bytes. The
// harness's "direct ≥ 2 GB/s" row measures the same with the stand-in in
// its own process.
func BenchmarkBulkSource(b *testing.B) {
	const want = 64_000_000
	srv := start(b, func(c *server.Config) { c.BulkSource = true })
	c := dial(b, srv, nil)
	buf := make([]byte, 256<<10)
	q := fmt.Sprintf("%s%d", server.BulkPrefix, want)
	var wire int64
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Send(q, 0); err != nil {
			b.Fatal(err)
		}
		n, err := c.StreamWire(buf)
		if err != nil {
			b.Fatal(err)
		}
		if n < want-int64(c.PacketSize) {
			b.Fatalf("%d wire bytes for %d", n, want)
		}
		wire = n
	}
	b.SetBytes(wire)
}
