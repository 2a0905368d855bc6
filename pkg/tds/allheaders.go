package tds

import "encoding/binary"

// ALL_HEADERS header types ([MS-TDS] 2.2.5.3).
const (
	HeaderQueryNotifications uint16 = 0x0001
	HeaderTransactionDesc    uint16 = 0x0002
	HeaderTraceActivity      uint16 = 0x0003
)

// AllHeaders is the ALL_HEADERS prefix of SQLBatch, RPC and TM requests
// (TDS 7.2+).
type AllHeaders struct {
	// TransactionDescriptor and OutstandingRequests come from the
	// transaction descriptor header; a descriptor is valid only on the
	// backend connection that issued it (ENVCHANGE 8).
	HasTransaction        bool
	TransactionDescriptor uint64
	OutstandingRequests   uint32
	// ActivityID is the trace activity header (GUID + sequence, 20 bytes).
	ActivityID []byte
	// Other headers (query notifications) are kept raw.
	Other []RawHeader
}

// RawHeader is an ALL_HEADERS entry this package does not interpret.
type RawHeader struct {
	Type uint16
	Data []byte
}

// ParseAllHeaders decodes ALL_HEADERS at the start of b and returns it
// with the number of bytes it took. The caller decides whether the
// request carries ALL_HEADERS (TDS 7.2+ clients always send it; jTDS
// speaking 7.1 does not). HasAllHeaders tells by a heuristic.
func ParseAllHeaders(b []byte) (*AllHeaders, int, error) {
	c := newCursor(b, "ALL_HEADERS")
	total := int(c.u32())
	if c.err != nil {
		return nil, 0, c.err
	}
	if total < 4 || total > len(b) {
		return nil, 0, errf(ErrBadLength, "ALL_HEADERS", "total length %d outside 4..%d", total, len(b))
	}
	c.b = b[:total]
	h := &AllHeaders{}
	for c.remaining() > 0 && c.err == nil {
		n := int(c.u32())
		if c.err != nil {
			break
		}
		if n < 6 || n-4 > c.remaining() {
			return nil, 0, errf(ErrBadLength, "ALL_HEADERS", "header length %d with %d remaining", n, c.remaining())
		}
		typ := c.u16()
		data := c.bytes(n - 6)
		switch typ {
		case HeaderTransactionDesc:
			if len(data) != 12 {
				return nil, 0, errf(ErrBadLength, "ALL_HEADERS", "transaction descriptor header of %d bytes", len(data))
			}
			h.HasTransaction = true
			h.TransactionDescriptor = binary.LittleEndian.Uint64(data)
			h.OutstandingRequests = binary.LittleEndian.Uint32(data[8:])
		case HeaderTraceActivity:
			if len(data) != 20 {
				return nil, 0, errf(ErrBadLength, "ALL_HEADERS", "trace activity header of %d bytes", len(data))
			}
			h.ActivityID = data
		default:
			h.Other = append(h.Other, RawHeader{Type: typ, Data: data})
		}
	}
	if c.err != nil {
		return nil, 0, c.err
	}
	return h, total, nil
}

// HasAllHeaders guesses whether a request payload starts with ALL_HEADERS:
// its first DWORD is a total length that fits and its first header's
// length fits inside it. A SQL text in UCS-2 never looks like that for
// realistic input (it would need NUL characters in its first four bytes).
func HasAllHeaders(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	total := binary.LittleEndian.Uint32(b)
	if total < 4 || int64(total) > int64(len(b)) {
		return false
	}
	if total == 4 {
		return true
	}
	if total < 10 || len(b) < 10 {
		return false
	}
	first := binary.LittleEndian.Uint32(b[4:])
	return first >= 6 && first <= total-4
}

// Append encodes h. A transaction descriptor header is always written
// (0 means no transaction), as clients do.
func (h *AllHeaders) Append(dst []byte) []byte {
	start := len(dst)
	dst = appendU32(dst, 0)
	dst = appendU32(dst, 18)
	dst = appendU16(dst, HeaderTransactionDesc)
	dst = appendU64(dst, h.TransactionDescriptor)
	or := h.OutstandingRequests
	if or == 0 {
		or = 1
	}
	dst = appendU32(dst, or)
	if len(h.ActivityID) == 20 {
		dst = appendU32(dst, 26)
		dst = appendU16(dst, HeaderTraceActivity)
		dst = append(dst, h.ActivityID...)
	}
	for _, o := range h.Other {
		dst = appendU32(dst, uint32(6+len(o.Data)))
		dst = appendU16(dst, o.Type)
		dst = append(dst, o.Data...)
	}
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

// SQLBatch is a decoded SQL batch request.
type SQLBatch struct {
	Headers *AllHeaders // nil when the client sent none (TDS 7.1)
	Text    string
}

// ParseSQLBatch decodes a SQLBatch payload.
func ParseSQLBatch(b []byte) (*SQLBatch, error) {
	s := &SQLBatch{}
	if HasAllHeaders(b) {
		h, n, err := ParseAllHeaders(b)
		if err != nil {
			return nil, err
		}
		s.Headers, b = h, b[n:]
	}
	if len(b)%2 != 0 {
		return nil, errf(ErrBadLength, "SQLBatch", "odd text length %d", len(b))
	}
	s.Text = decodeUCS2(b)
	return s, nil
}

// AppendSQLBatch encodes a SQL batch payload with ALL_HEADERS.
func AppendSQLBatch(dst []byte, h *AllHeaders, text string) []byte {
	if h == nil {
		h = &AllHeaders{}
	}
	dst = h.Append(dst)
	return appendUCS2(dst, text)
}

// Transaction manager request types ([MS-TDS] 2.2.6.9).
const (
	TMGetDTCAddress uint16 = 0
	TMPropagateXact uint16 = 1
	TMBeginXact     uint16 = 5
	TMPromoteXact   uint16 = 6
	TMCommitXact    uint16 = 7
	TMRollbackXact  uint16 = 8
	TMSaveXact      uint16 = 9
)

// TransMgrReq is a decoded transaction manager request.
type TransMgrReq struct {
	Headers   *AllHeaders
	Type      uint16
	Isolation uint8  // TM_BEGIN_XACT
	Name      string // transaction name (begin, commit, rollback, save)
	Flags     uint8  // TM_COMMIT_XACT / TM_ROLLBACK_XACT: 0x01 begin a new transaction
	NewName   string
	Payload   []byte // other request types
}

// ParseTransMgrReq decodes a transaction manager request payload.
func ParseTransMgrReq(b []byte) (*TransMgrReq, error) {
	r := &TransMgrReq{}
	h, n, err := ParseAllHeaders(b)
	if err != nil {
		return nil, err
	}
	r.Headers = h
	c := newCursor(b[n:], "TM request")
	r.Type = c.u16()
	switch r.Type {
	case TMBeginXact:
		r.Isolation = c.u8()
		r.Name = c.bVarchar()
	case TMCommitXact, TMRollbackXact:
		r.Name = c.bVarchar()
		if c.err == nil && c.remaining() > 0 {
			r.Flags = c.u8()
		}
		if c.err == nil && r.Flags&0x01 != 0 {
			r.Isolation = c.u8()
			r.NewName = c.bVarchar()
		}
	case TMSaveXact:
		r.Name = c.bVarchar()
	default:
		r.Payload = c.b[c.off:]
	}
	return r, errOrNil(c.err)
}
