package tds

// Well-known procedure ids for RPC requests sent by id ([MS-TDS] 2.2.6.6).
const (
	ProcCursor         uint16 = 1
	ProcCursorOpen     uint16 = 2
	ProcCursorPrepare  uint16 = 3
	ProcCursorExecute  uint16 = 4
	ProcCursorPrepExec uint16 = 5
	ProcCursorUnprep   uint16 = 6
	ProcCursorFetch    uint16 = 7
	ProcCursorOption   uint16 = 8
	ProcCursorClose    uint16 = 9
	ProcExecuteSQL     uint16 = 10
	ProcPrepare        uint16 = 11
	ProcExecute        uint16 = 12
	ProcPrepExec       uint16 = 13
	ProcPrepExecRPC    uint16 = 14
	ProcUnprepare      uint16 = 15
)

// ProcNames maps procedure ids to their names.
var ProcNames = map[uint16]string{
	ProcCursor: "sp_cursor", ProcCursorOpen: "sp_cursoropen", ProcCursorPrepare: "sp_cursorprepare",
	ProcCursorExecute: "sp_cursorexecute", ProcCursorPrepExec: "sp_cursorprepexec", ProcCursorUnprep: "sp_cursorunprepare",
	ProcCursorFetch: "sp_cursorfetch", ProcCursorOption: "sp_cursoroption", ProcCursorClose: "sp_cursorclose",
	ProcExecuteSQL: "sp_executesql", ProcPrepare: "sp_prepare", ProcExecute: "sp_execute",
	ProcPrepExec: "sp_prepexec", ProcPrepExecRPC: "sp_prepexecrpc", ProcUnprepare: "sp_unprepare",
}

// RPC parameter status flags.
const (
	ParamByRef   uint8 = 0x01 // output parameter
	ParamDefault uint8 = 0x02
)

// RPC batch separators.
const (
	rpcBatchFlag72 = 0xFF
	rpcBatchFlag71 = 0x80
	rpcNoExecFlag  = 0xFE
)

// RPCParam is one parameter of an RPC call. Value holds the wire bytes of
// the value (nil for NULL); DecodeValue turns them into a Go value.
type RPCParam struct {
	Name   string
	Status uint8
	Type   TypeInfo
	Value  []byte
}

// RPCCall is one procedure call of an RPC request.
type RPCCall struct {
	ProcID   uint16 // non-zero when called by id
	ProcName string // set when called by name, or from ProcNames for an id
	Options  uint16
	Params   []RPCParam
}

// RPCRequest is a decoded RPC request: ALL_HEADERS and one or more calls.
type RPCRequest struct {
	Headers *AllHeaders
	Calls   []RPCCall
}

// ParseRPC decodes an RPC request payload.
func ParseRPC(b []byte) (*RPCRequest, error) {
	r := &RPCRequest{}
	if HasAllHeaders(b) {
		h, n, err := ParseAllHeaders(b)
		if err != nil {
			return nil, err
		}
		r.Headers, b = h, b[n:]
	}
	c := newCursor(b, "RPC")
	for c.err == nil && c.remaining() > 0 {
		var call RPCCall
		n := c.u16()
		if n == 0xFFFF {
			call.ProcID = c.u16()
			call.ProcName = ProcNames[call.ProcID]
		} else {
			call.ProcName = decodeUCS2(c.bytes(2 * int(n)))
		}
		call.Options = c.u16()
		for c.err == nil && c.remaining() > 0 {
			next := c.b[c.off]
			if next == rpcBatchFlag72 || next == rpcBatchFlag71 || next == rpcNoExecFlag {
				c.off++
				break
			}
			var p RPCParam
			p.Name = c.bVarchar()
			p.Status = c.u8()
			if c.err == nil && c.remaining() > 0 && c.b[c.off] == 0xF3 {
				return nil, errf(ErrUnsupported, "RPC", "table-valued parameters are not supported")
			}
			p.Type = parseTypeInfo(c)
			p.Value = readParamValue(c, &p.Type)
			if c.err != nil {
				return nil, c.err
			}
			call.Params = append(call.Params, p)
		}
		if c.err != nil {
			return nil, c.err
		}
		r.Calls = append(r.Calls, call)
	}
	return r, errOrNil(c.err)
}

// AppendRPC encodes an RPC request with ALL_HEADERS (TDS 7.2+ layout):
// batched calls are separated by 0xFF.
func AppendRPC(dst []byte, h *AllHeaders, calls []RPCCall) []byte {
	if h == nil {
		h = &AllHeaders{}
	}
	return appendRPCCalls(h.Append(dst), calls, rpcBatchFlag72)
}

// AppendRPC71 encodes an RPC request as a TDS 7.1 client sends it: no
// ALL_HEADERS, batched calls separated by 0x80. ParseRPC reads both
// layouts.
func AppendRPC71(dst []byte, calls []RPCCall) []byte {
	return appendRPCCalls(dst, calls, rpcBatchFlag71)
}

func appendRPCCalls(dst []byte, calls []RPCCall, sep byte) []byte {
	for i, call := range calls {
		if i > 0 {
			dst = append(dst, sep)
		}
		if call.ProcID != 0 {
			dst = appendU16(dst, 0xFFFF)
			dst = appendU16(dst, call.ProcID)
		} else {
			dst = appendU16(dst, uint16(ucs2Len(call.ProcName)))
			dst = appendUCS2(dst, call.ProcName)
		}
		dst = appendU16(dst, call.Options)
		for _, p := range call.Params {
			dst = appendBVarchar(dst, p.Name)
			dst = append(dst, p.Status)
			dst = AppendTypeInfo(dst, p.Type)
			dst = appendParamValue(dst, &p.Type, p.Value)
		}
	}
	return dst
}
