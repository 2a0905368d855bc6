package server

import (
	"io"

	"github.com/tdsgate/tdsgate/pkg/tds"
)

// response streams a REPLY message: tokens are appended to a buffer that
// is written out a full packet at a time, and the last packet carries EOM.
type response struct {
	w          io.Writer
	packetSize int
	spid       uint16
	id         uint8
	buf        []byte // header room + payload of the packet being built
	err        error
}

func newResponse(w io.Writer, packetSize int, spid uint16) *response {
	r := &response{w: w, packetSize: packetSize, spid: spid, id: 1}
	r.buf = make([]byte, tds.HeaderLen, packetSize)
	return r
}

// payload returns the buffer tokens are appended to.
func (r *response) add(b []byte) {
	r.buf = append(r.buf, b...)
	r.spill()
}

// spill writes out full packets.
func (r *response) spill() {
	for len(r.buf) > r.packetSize && r.err == nil {
		r.write(r.buf[:r.packetSize], false)
		rest := r.buf[r.packetSize:]
		nb := make([]byte, tds.HeaderLen, max(r.packetSize, tds.HeaderLen+len(rest)))
		r.buf = append(nb, rest...)
	}
}

func (r *response) write(pkt []byte, eom bool) {
	st := uint8(0)
	if eom {
		st = tds.StatusEOM
	}
	tds.Header{Type: tds.PacketReply, Status: st, Length: uint16(len(pkt)), SPID: r.spid, PacketID: r.id}.Put(pkt)
	r.id++
	if _, err := r.w.Write(pkt); err != nil && r.err == nil {
		r.err = err
	}
}

// end writes the last packet with EOM.
func (r *response) end() error {
	r.spill()
	if r.err == nil {
		r.write(r.buf, true)
	}
	r.buf = r.buf[:tds.HeaderLen]
	r.id = 1
	return r.err
}
