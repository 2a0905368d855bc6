package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/standin/server"
	"github.com/tdsgate/tdsgate/tools/tdsclient"
)

// TestBulkSource: with bulk_source, "-- standin:bulk N" answers about N
// bytes of rows that decode (every row, every value), with a DONE that
// counts them, in plaintext and in full TLS; StreamWire counts the same
// bytes; without bulk_source the batch is a comment.
func TestBulkSource(t *testing.T) {
	srv := start(t, func(c *server.Config) { c.BulkSource = true })
	for _, enc := range []string{tdsclient.EncryptNone, tdsclient.EncryptFull} {
		c := dial(t, srv, func(o *tdsclient.Options) { o.Encrypt = enc })
		const want = 3_000_000
		if err := c.Send(fmt.Sprintf("%s%d", server.BulkPrefix, want), 0); err != nil {
			t.Fatal(err)
		}
		var rows, wire int64
		var done *tds.Done
		err := c.Stream(func(tk tds.Token) error {
			switch {
			case tk.Row != nil:
				rows++
				if len(tk.Row) != 2 || len(tk.Row[1]) != c.PacketSize-16 || strings.Trim(string(tk.Row[1]), "x") != "" {
					return fmt.Errorf("row %d: %d values, pad %d bytes", rows, len(tk.Row), len(tk.Row[1]))
				}
			case tk.Done != nil:
				done = tk.Done
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", enc, err)
		}
		if rows != want/int64(c.PacketSize) || done == nil || done.RowCount != uint64(rows) || done.Status&tds.DoneCount == 0 {
			t.Fatalf("%s: %d rows, DONE %+v", enc, rows, done)
		}
		if err := c.Send(fmt.Sprintf("%s%d", server.BulkPrefix, want), 0); err != nil {
			t.Fatal(err)
		}
		if wire, err = c.StreamWire(make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
		if wire < want-int64(c.PacketSize) || wire > want+int64(2*c.PacketSize) {
			t.Fatalf("%s: %d wire bytes for %d", enc, wire, want)
		}
		// The session goes on.
		if r := exec(t, c, "SELECT 1"); len(r.Rows) != 1 {
			t.Fatalf("%s: SELECT 1 after: %+v", enc, r)
		}
	}
	off := start(t, nil)
	c := dial(t, off, nil)
	if r := exec(t, c, server.BulkPrefix+"1000000"); len(r.Rows) != 0 {
		t.Fatalf("bulk without bulk_source: %d rows", len(r.Rows))
	}
}
