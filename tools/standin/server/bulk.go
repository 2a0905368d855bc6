package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/tools/standin/engine"
)

// BulkPrefix opens the batch that, with Config.BulkSource, streams a
// result from memory: "-- standin:bulk <bytes>" answers about that many
// bytes of rows (value INT, pad VARCHAR(8000)), built once and written
// over and over, a megabyte per write, without SQLite. It is a source for
// benchmarks that must not be the bottleneck: the engine makes rows at a
// few hundred MB/s, this at the speed of the socket.
const BulkPrefix = "-- standin:bulk "

// bulkRequest returns the byte count of a bulk batch.
func bulkRequest(text string) (int64, bool) {
	rest, ok := strings.CutPrefix(text, BulkPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
	return n, err == nil && n > 0
}

// bulkBlockPackets is how many packets a block holds: a whole cycle of
// packet ids, so that blocks follow one another unchanged.
const bulkBlockPackets = 256

// bulk answers a bulk batch: rp holds what already opens the answer (an
// ENVCHANGE 18 after a reset). Every row is one packet long, and every
// row is the same, so every packet after the first carries the same
// payload (the end of one row and the start of the next): a block of 256
// of them is built once and written until the rows are out, then the
// last row's end and a DONE go in the EOM packet.
func (c *conn) bulk(ctx context.Context, want int64, rp *response, sk *sink) error {
	ps := c.packetSize
	p := ps - tds.HeaderLen // payload per packet, and the row's length
	padLen := p - 8         // ROW token, INTN (1+4), VARCHAR length (2)
	if padLen < 1 || padLen > 8000 {
		sk.Error(&engine.SQLError{Number: 50000, State: 1, Class: 16, Message: fmt.Sprintf("standin:bulk needs a packet size of 17 to 8016 bytes, not %d", ps), Line: 1})
		sk.Done(engine.Done{Error: true})
		sk.finish()
		return rp.end()
	}
	if err := sk.Columns([]engine.Column{{Name: "value", Kind: engine.KindInt}, {Name: "pad", Kind: engine.KindVarChar, Size: 8000}}); err != nil {
		return err
	}
	v0, _ := encodeValue(&sk.cols[0].Type, sk.kinds[0], int64(1))
	v1, _ := encodeValue(&sk.cols[1].Type, sk.kinds[1], strings.Repeat("x", padLen))
	row := tds.AppendRow(nil, sk.cols, [][]byte{v0, v1})
	if len(row) != p {
		return fmt.Errorf("standin: bulk row of %d bytes, want %d", len(row), p)
	}
	// The first packet: what opens the answer, COLMETADATA, and the start
	// of the first row.
	head := rp.buf[tds.HeaderLen:]
	if len(head) >= p {
		return fmt.Errorf("standin: bulk answer's first %d bytes do not fit a packet", len(head))
	}
	cut := p - len(head) // every packet after the first starts with row[cut:]
	rows := max(want/int64(ps), 1)
	first := append(append(make([]byte, tds.HeaderLen, ps), head...), row[:cut]...)
	rp.buf = rp.buf[:tds.HeaderLen]
	rp.write(first, false)
	// The middle packets: row[cut:] + row[:cut], ids going round.
	payload := append(append([]byte{}, row[cut:]...), row[:cut]...)
	block := make([]byte, 0, bulkBlockPackets*ps)
	startID := rp.id
	for k := range bulkBlockPackets {
		h := tds.Header{Type: tds.PacketReply, Length: uint16(ps), SPID: rp.spid, PacketID: startID + uint8(k)}
		var hb [tds.HeaderLen]byte
		h.Put(hb[:])
		block = append(append(block, hb[:]...), payload...)
	}
	middle := rows - 1
	sent := rows
	for middle > 0 && rp.err == nil {
		if ctx.Err() != nil {
			// Canceled (ATTENTION): end the row in flight, DONE without a count.
			sent = rows - middle
			break
		}
		k := min(middle, bulkBlockPackets)
		if _, err := rp.w.Write(block[:k*int64(ps)]); err != nil {
			rp.err = err
		}
		middle -= k
		rp.id += uint8(k)
	}
	if rp.err != nil {
		return rp.err
	}
	rp.buf = append(rp.buf, row[cut:]...)
	d := tds.Done{Status: tds.DoneCount, CurCmd: 0xC1, RowCount: uint64(sent)}
	if ctx.Err() != nil {
		d = tds.Done{}
	}
	rp.buf = tds.AppendDone(rp.buf, tds.TokenDone, d, c.version)
	return rp.end()
}
