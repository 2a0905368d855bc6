package tds

import (
	"encoding/binary"
	"io"
)

// PacketType is the first byte of a TDS packet header ([MS-TDS] 2.2.3.1.1).
type PacketType uint8

// Packet types.
const (
	PacketSQLBatch     PacketType = 0x01
	PacketPreTDS7Login PacketType = 0x02 // TDS 4.2/5.0 login: refused
	PacketRPC          PacketType = 0x03
	PacketReply        PacketType = 0x04 // tabular result (server to client)
	PacketAttention    PacketType = 0x06
	PacketBulkLoad     PacketType = 0x07
	PacketFedAuthToken PacketType = 0x08
	PacketTransMgrReq  PacketType = 0x0E
	PacketLogin7       PacketType = 0x10
	PacketSSPI         PacketType = 0x11
	PacketPrelogin     PacketType = 0x12
)

// Status bits of the packet header ([MS-TDS] 2.2.3.1.2). Unknown bits are
// kept as they are: real clients set undocumented ones (a public capture of
// SQL Server traffic has status 0x04 on the first packet of a multi-packet
// RPC).
const (
	StatusEOM                     uint8 = 0x01
	StatusIgnore                  uint8 = 0x02
	StatusResetConnection         uint8 = 0x08
	StatusResetConnectionSkipTran uint8 = 0x10
)

// HeaderLen is the size of a packet header.
const HeaderLen = 8

// Packet sizes.
const (
	// DefaultPacketSize is the packet size before LOGIN7 negotiates one, and
	// SQL Server's default.
	DefaultPacketSize = 4096
	// MinPacketSize is the smallest packet size SQL Server accepts.
	MinPacketSize = 512
	// MaxPacketSize is the largest packet size TDS allows.
	MaxPacketSize = 32767
	// DefaultMaxMessage caps the reassembly of one message when the caller
	// sets no cap: generous for logins and batches, bounded against floods.
	DefaultMaxMessage = 16 << 20
)

// Header is a decoded packet header.
type Header struct {
	Type     PacketType
	Status   uint8
	Length   uint16 // whole packet, header included (big-endian on the wire)
	SPID     uint16 // big-endian on the wire
	PacketID uint8
	Window   uint8
}

// EOM reports whether this packet ends its message.
func (h Header) EOM() bool { return h.Status&StatusEOM != 0 }

// ParseHeader decodes a packet header and checks its length: below 8 or
// above maxPacket (the negotiated packet size; 0 means MaxPacketSize) is an
// error, as go-mssqldb's readNextPacket does.
func ParseHeader(b []byte, maxPacket int) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, errf(ErrShort, "packet header", "need %d bytes, have %d", HeaderLen, len(b))
	}
	h := Header{
		Type:     PacketType(b[0]),
		Status:   b[1],
		Length:   binary.BigEndian.Uint16(b[2:4]),
		SPID:     binary.BigEndian.Uint16(b[4:6]),
		PacketID: b[6],
		Window:   b[7],
	}
	if maxPacket <= 0 || maxPacket > MaxPacketSize {
		maxPacket = MaxPacketSize
	}
	if h.Length < HeaderLen {
		return h, errf(ErrBadLength, "packet header", "length %d below %d", h.Length, HeaderLen)
	}
	if int(h.Length) > maxPacket {
		return h, errf(ErrBadLength, "packet header", "length %d above packet size %d", h.Length, maxPacket)
	}
	return h, nil
}

// Put encodes h into b[:8].
func (h Header) Put(b []byte) {
	_ = b[7]
	b[0] = byte(h.Type)
	b[1] = h.Status
	binary.BigEndian.PutUint16(b[2:4], h.Length)
	binary.BigEndian.PutUint16(b[4:6], h.SPID)
	b[6] = h.PacketID
	b[7] = h.Window
}

// AppendPackets splits payload into packets of at most packetSize bytes
// (header included) and appends them to dst. The last packet carries EOM
// along with status; only the first carries the reset bits of status. The
// packet id starts at firstID and counts up modulo 256.
func AppendPackets(dst []byte, typ PacketType, status uint8, spid uint16, firstID uint8, packetSize int, payload []byte) []byte {
	if packetSize < MinPacketSize || packetSize > MaxPacketSize {
		packetSize = DefaultPacketSize
	}
	room := packetSize - HeaderLen
	id := firstID
	first := true
	for {
		n := len(payload)
		if n > room {
			n = room
		}
		st := status &^ StatusEOM
		if !first {
			st &^= StatusResetConnection | StatusResetConnectionSkipTran
		}
		if n == len(payload) {
			st |= StatusEOM
		}
		var hb [HeaderLen]byte
		Header{Type: typ, Status: st, Length: uint16(HeaderLen + n), SPID: spid, PacketID: id}.Put(hb[:])
		dst = append(dst, hb[:]...)
		dst = append(dst, payload[:n]...)
		payload = payload[n:]
		id++
		first = false
		if len(payload) == 0 {
			return dst
		}
	}
}

// Message is a reassembled TDS message: the header fields of its first
// packet and the concatenated payloads of all its packets.
type Message struct {
	Type PacketType
	// Status is the first packet's status (it carries RESETCONNECTION);
	// EOM is always set on a complete message.
	Status  uint8
	SPID    uint16
	Packets int
	Data    []byte
}

// MessageReader reassembles messages from a stream of packets. It reads
// only what each header announces, so it never consumes bytes past the
// end of a message: after a PRELOGIN the caller may hand the underlying
// stream to a TLS handshake.
type MessageReader struct {
	R io.Reader
	// PacketSize is the largest packet accepted (0: MaxPacketSize).
	PacketSize int
	// MaxMessage caps a reassembled message (0: DefaultMaxMessage).
	MaxMessage int

	hdr [HeaderLen]byte
}

// NewMessageReader returns a reader with the given limits.
func NewMessageReader(r io.Reader, packetSize, maxMessage int) *MessageReader {
	return &MessageReader{R: r, PacketSize: packetSize, MaxMessage: maxMessage}
}

// ReadHeader reads and checks one packet header.
func (m *MessageReader) ReadHeader() (Header, error) {
	if _, err := io.ReadFull(m.R, m.hdr[:]); err != nil {
		return Header{}, err
	}
	return ParseHeader(m.hdr[:], m.PacketSize)
}

// ReadMessage reads packets until EOM and returns the message. A packet
// whose type differs from the first packet's is an error, except that an
// ATTENTION may interrupt nothing here: callers that expect one read it as
// its own message. io.EOF is returned only when the stream ends cleanly
// before a header; a stream that ends inside a message yields
// io.ErrUnexpectedEOF.
func (m *MessageReader) ReadMessage() (Message, error) {
	maxMsg := m.MaxMessage
	if maxMsg <= 0 {
		maxMsg = DefaultMaxMessage
	}
	var msg Message
	for {
		h, err := m.ReadHeader()
		if err != nil {
			if msg.Packets > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return msg, err
		}
		if msg.Packets == 0 {
			msg.Type, msg.Status, msg.SPID = h.Type, h.Status, h.SPID
		} else if h.Type != msg.Type {
			return msg, errf(ErrBadType, "message", "packet type 0x%02x inside a message of type 0x%02x", uint8(h.Type), uint8(msg.Type))
		}
		n := int(h.Length) - HeaderLen
		if len(msg.Data)+n > maxMsg {
			return msg, errf(ErrTooLarge, "message", "message exceeds %d bytes", maxMsg)
		}
		start := len(msg.Data)
		msg.Data = append(msg.Data, make([]byte, n)...)
		if _, err := io.ReadFull(m.R, msg.Data[start:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return msg, err
		}
		msg.Packets++
		if h.EOM() {
			msg.Status |= StatusEOM
			return msg, nil
		}
	}
}
