package tds

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// TokenType is the first byte of a token in a tabular response ([MS-TDS] 2.2.7).
type TokenType uint8

// Token types.
const (
	TokenAltMetadata   TokenType = 0x88
	TokenAltRow        TokenType = 0xD3
	TokenColMetadata   TokenType = 0x81
	TokenColInfo       TokenType = 0xA5
	TokenDataClassif   TokenType = 0xA3
	TokenDone          TokenType = 0xFD
	TokenDoneProc      TokenType = 0xFE
	TokenDoneInProc    TokenType = 0xFF
	TokenEnvChange     TokenType = 0xE3
	TokenError         TokenType = 0xAA
	TokenFeatureExtAck TokenType = 0xAE
	TokenFedAuthInfo   TokenType = 0xEE
	TokenInfo          TokenType = 0xAB
	TokenLoginAck      TokenType = 0xAD
	TokenNBCRow        TokenType = 0xD2
	TokenOffset        TokenType = 0x78
	TokenOrder         TokenType = 0xA9
	TokenReturnStatus  TokenType = 0x79
	TokenReturnValue   TokenType = 0xAC
	TokenRow           TokenType = 0xD1
	TokenSessionState  TokenType = 0xE4
	TokenSSPI          TokenType = 0xED
	TokenTabName       TokenType = 0xA4
)

// DONE status bits ([MS-TDS] 2.2.7.6).
const (
	DoneFinal  uint16 = 0x0000
	DoneMore   uint16 = 0x0001
	DoneError  uint16 = 0x0002
	DoneInXact uint16 = 0x0004
	DoneCount  uint16 = 0x0010
	DoneAttn   uint16 = 0x0020
	// DoneRPCInBatch marks the DONEPROC of an RPC call that another call
	// of the same request follows (0x80; SQL Server sets it, as a real
	// SQL Server 2008 answer to two batched sp_execute calls shows).
	DoneRPCInBatch uint16 = 0x0080
	DoneSrvError   uint16 = 0x0100
)

// ENVCHANGE types ([MS-TDS] 2.2.7.9).
const (
	EnvDatabase     uint8 = 1
	EnvLanguage     uint8 = 2
	EnvCharset      uint8 = 3
	EnvPacketSize   uint8 = 4
	EnvSortLocale   uint8 = 5
	EnvSortFlags    uint8 = 6
	EnvSQLCollation uint8 = 7
	EnvBeginTran    uint8 = 8
	EnvCommitTran   uint8 = 9
	EnvRollbackTran uint8 = 10
	EnvEnlistDTC    uint8 = 11
	EnvDefectTran   uint8 = 12
	EnvLogShipping  uint8 = 13
	EnvPromoteTran  uint8 = 15
	EnvTranMgrAddr  uint8 = 16
	EnvTranEnded    uint8 = 17
	EnvResetConnAck uint8 = 18
	EnvUserInstance uint8 = 19
	EnvRouting      uint8 = 20
)

// Error/INFO numbers that tdsgate and its stand-in send.
const (
	// ErrNumQueueTimeout: a client waited in a bucket's queue past queue_timeout.
	ErrNumQueueTimeout int32 = 50004
	// ErrNumQueueFull: a bucket's wait queue was full.
	ErrNumQueueFull int32 = 50005
	// ErrNumNoShare: the bucket's cap is shared through Redis, Redis has
	// never been reached, and without redis.expected_instances this
	// instance has no share of it to admit on.
	ErrNumNoShare int32 = 50011
	// ErrNumLoginFailed is SQL Server's "Login failed for user".
	ErrNumLoginFailed int32 = 18456
	// ErrNumTooManyConns is SQL Server's refusal past its connection cap.
	ErrNumTooManyConns int32 = 17809
	// InfoNumDatabaseChanged / InfoNumLanguageChanged follow ENVCHANGE 1 and 2 at login.
	InfoNumDatabaseChanged int32 = 5701
	InfoNumLanguageChanged int32 = 5703
)

// isTDS72 reports whether version v uses the 7.2+ layouts (8-byte DONE
// row counts, 4-byte line numbers, 4-byte UserType).
func isTDS72(v uint32) bool { return v >= Version72 || v == 0 }

// ErrorToken is the body shared by ERROR and INFO ([MS-TDS] 2.2.7.10 and 2.2.7.13).
type ErrorToken struct {
	Number     int32
	State      uint8
	Class      uint8
	Message    string
	ServerName string
	ProcName   string
	LineNumber int32
}

func (e *ErrorToken) Error() string {
	return fmt.Sprintf("mssql: Msg %d, Level %d, State %d: %s", e.Number, e.Class, e.State, e.Message)
}

// LoginAck is the LOGINACK token ([MS-TDS] 2.2.7.14).
type LoginAck struct {
	Interface  uint8 // 1: SQL_TSQL
	TDSVersion uint32
	ProgName   string
	ProgVer    [4]byte // major, minor, build high, build low
}

// EnvChange is an ENVCHANGE token. New and Old hold the raw values; for
// the string types use NewString/OldString.
type EnvChange struct {
	Type uint8
	New  []byte
	Old  []byte
}

// envValueKind tells how an ENVCHANGE type encodes its values.
func envValueKind(t uint8) byte {
	switch t {
	case EnvDatabase, EnvLanguage, EnvCharset, EnvPacketSize, EnvSortLocale, EnvSortFlags, EnvLogShipping, EnvUserInstance:
		return 's' // B_VARCHAR
	case EnvPromoteTran:
		return 'L' // L_VARBYTE new, 0x00 old
	case EnvRouting:
		return 'R' // US_VARBYTE new, 0x0000 old
	}
	return 'b' // B_VARBYTE
}

// NewString decodes New as text for the string-valued types.
func (e EnvChange) NewString() string { return decodeUCS2(e.New) }

// OldString decodes Old as text for the string-valued types.
func (e EnvChange) OldString() string { return decodeUCS2(e.Old) }

// EnvString builds a string-valued ENVCHANGE (database, language, packet size…).
func EnvString(t uint8, newV, oldV string) EnvChange {
	return EnvChange{Type: t, New: EncodeUCS2(newV), Old: EncodeUCS2(oldV)}
}

// EnvPacketSizeChange builds ENVCHANGE 4.
func EnvPacketSizeChange(newV, oldV int) EnvChange {
	return EnvString(EnvPacketSize, strconv.Itoa(newV), strconv.Itoa(oldV))
}

// Routing is the value of ENVCHANGE 20.
type Routing struct {
	Protocol uint8 // 0: TCP
	Port     uint16
	Server   string
}

// Routing decodes an ENVCHANGE 20 value.
func (e EnvChange) Routing() (Routing, error) {
	c := newCursor(e.New, "ENVCHANGE routing")
	r := Routing{Protocol: c.u8(), Port: c.u16()}
	r.Server = c.usVarchar()
	return r, errOrNil(c.err)
}

// EnvRoutingChange builds ENVCHANGE 20.
func EnvRoutingChange(r Routing) EnvChange {
	v := []byte{r.Protocol}
	v = appendU16(v, r.Port)
	v = appendUSVarchar(v, r.Server)
	return EnvChange{Type: EnvRouting, New: v}
}

// Done is the body of DONE, DONEPROC and DONEINPROC ([MS-TDS] 2.2.7.6).
type Done struct {
	Status   uint16
	CurCmd   uint16
	RowCount uint64
}

// Feature acknowledgement is a Feature list in FEATUREEXTACK.

// Token is one decoded token. Exactly one of the pointer fields is set,
// according to Type; tokens this package only skips have Raw set.
type Token struct {
	Type      TokenType
	Error     *ErrorToken // ERROR and INFO
	LoginAck  *LoginAck
	EnvChange *EnvChange
	Done      *Done // DONE, DONEPROC, DONEINPROC
	Features  []Feature
	ColMeta   *ColMetadata
	Row       [][]byte // ROW / NBCROW: raw column values (nil = NULL)
	Status    int32    // RETURNSTATUS
	Return    *ReturnValue
	Raw       []byte // the whole token, type byte included
}

func errOrNil(e *Error) error {
	if e == nil {
		return nil
	}
	return e
}

// TokenReader decodes a token stream (the payload of a REPLY message). It
// keeps the last COLMETADATA so that it can decode the ROWs that follow.
type TokenReader struct {
	b       []byte
	off     int
	Version uint32 // the session's TDS version; 0 means 7.4
	meta    *ColMetadata
}

// NewTokenReader reads tokens from b for a session of the given TDS version.
func NewTokenReader(b []byte, version uint32) *TokenReader {
	return &TokenReader{b: b, Version: version}
}

// Continue makes r read b from its start, keeping the last COLMETADATA:
// a token stream that arrives in pieces is read by handing r each piece
// with the bytes of an unfinished token in front.
func (r *TokenReader) Continue(b []byte) { r.b, r.off = b, 0 }

// More reports whether bytes remain.
func (r *TokenReader) More() bool { return r.off < len(r.b) }

// Offset is the number of bytes consumed.
func (r *TokenReader) Offset() int { return r.off }

// Next decodes the next token.
func (r *TokenReader) Next() (Token, error) {
	c := &cursor{b: r.b, off: r.off, what: "token"}
	t := TokenType(c.u8())
	if c.err != nil {
		return Token{}, c.err
	}
	tok := Token{Type: t}
	start := r.off
	switch t {
	case TokenError, TokenInfo:
		n := int(c.u16())
		body := c.bytes(n)
		if c.err != nil {
			return tok, c.err
		}
		e, err := parseErrorBody(body, r.Version)
		if err != nil {
			return tok, err
		}
		tok.Error = e
	case TokenLoginAck:
		body := c.bytes(int(c.u16()))
		if c.err != nil {
			return tok, c.err
		}
		bc := newCursor(body, "LOGINACK")
		la := &LoginAck{Interface: bc.u8(), TDSVersion: bc.u32be()}
		la.ProgName = bc.bVarchar()
		copy(la.ProgVer[:], bc.bytes(4))
		if bc.err != nil {
			return tok, bc.err
		}
		tok.LoginAck = la
	case TokenEnvChange:
		body := c.bytes(int(c.u16()))
		if c.err != nil {
			return tok, c.err
		}
		ec, err := parseEnvChange(body)
		if err != nil {
			return tok, err
		}
		tok.EnvChange = ec
	case TokenDone, TokenDoneProc, TokenDoneInProc:
		d := &Done{Status: c.u16(), CurCmd: c.u16()}
		if isTDS72(r.Version) {
			d.RowCount = c.u64()
		} else {
			d.RowCount = uint64(c.u32())
		}
		if c.err != nil {
			return tok, c.err
		}
		tok.Done = d
	case TokenFeatureExtAck:
		rest := c.b[c.off:]
		fs, err := ParseFeatures(rest)
		if err != nil {
			return tok, err
		}
		n := 1
		for _, f := range fs {
			n += 5 + len(f.Data)
		}
		c.off += n
		tok.Features = fs
	case TokenReturnStatus:
		tok.Status = int32(c.u32())
	case TokenReturnValue:
		tok.Return = parseReturnValue(c, r.Version)
	case TokenOrder, TokenColInfo, TokenTabName, TokenSSPI:
		c.bytes(int(c.u16()))
	case TokenFedAuthInfo, TokenSessionState, TokenDataClassif:
		if t == TokenDataClassif {
			return tok, errf(ErrUnsupported, "token", "DATACLASSIFICATION token cannot be skipped")
		}
		n := c.u32()
		if c.err == nil && uint64(n) > uint64(c.remaining()) {
			return tok, errf(ErrBadLength, "token", "token 0x%02x length %d exceeds %d remaining", uint8(t), n, c.remaining())
		}
		c.bytes(int(n))
	case TokenColMetadata:
		m, err := parseColMetadata(c, r.Version)
		if err != nil {
			return tok, err
		}
		if m != nil {
			r.meta = m
		}
		tok.ColMeta = m
	case TokenRow, TokenNBCRow:
		if r.meta == nil {
			return tok, errf(ErrBadValue, "ROW", "row without COLMETADATA")
		}
		vals, err := parseRow(c, r.meta, t == TokenNBCRow)
		if err != nil {
			return tok, err
		}
		tok.Row = vals
	default:
		return tok, errf(ErrBadType, "token", "unknown token type 0x%02x at offset %d", uint8(t), r.off)
	}
	if c.err != nil {
		return tok, c.err
	}
	r.off = c.off
	tok.Raw = r.b[start:r.off:r.off]
	return tok, nil
}

func parseErrorBody(body []byte, version uint32) (*ErrorToken, error) {
	c := newCursor(body, "ERROR/INFO")
	e := &ErrorToken{Number: int32(c.u32()), State: c.u8(), Class: c.u8()}
	e.Message = c.usVarchar()
	e.ServerName = c.bVarchar()
	e.ProcName = c.bVarchar()
	if isTDS72(version) {
		e.LineNumber = int32(c.u32())
	} else {
		e.LineNumber = int32(c.u16())
	}
	return e, errOrNil(c.err)
}

func parseEnvChange(body []byte) (*EnvChange, error) {
	c := newCursor(body, "ENVCHANGE")
	e := &EnvChange{Type: c.u8()}
	switch envValueKind(e.Type) {
	case 's':
		e.New = c.bytes(2 * int(c.u8()))
		e.Old = c.bytes(2 * int(c.u8()))
	case 'L':
		n := c.u32()
		if c.err == nil && uint64(n) > uint64(c.remaining()) {
			return nil, errf(ErrBadLength, "ENVCHANGE", "value length %d exceeds %d", n, c.remaining())
		}
		e.New = c.bytes(int(n))
		e.Old = c.bytes(int(c.u8()))
	case 'R':
		e.New = c.bytes(int(c.u16()))
		e.Old = c.bytes(int(c.u16()))
	default:
		e.New = c.bVarbyte()
		e.Old = c.bVarbyte()
	}
	return e, errOrNil(c.err)
}

// AppendError appends an ERROR token (or INFO with info=true) for a
// session of the given TDS version.
func AppendError(dst []byte, e *ErrorToken, info bool, version uint32) []byte {
	t := TokenError
	if info {
		t = TokenInfo
	}
	dst = append(dst, byte(t), 0, 0)
	start := len(dst)
	dst = appendU32(dst, uint32(e.Number))
	dst = append(dst, e.State, e.Class)
	dst = appendUSVarchar(dst, e.Message)
	dst = appendBVarchar(dst, e.ServerName)
	dst = appendBVarchar(dst, e.ProcName)
	if isTDS72(version) {
		dst = appendU32(dst, uint32(e.LineNumber))
	} else {
		dst = appendU16(dst, uint16(e.LineNumber))
	}
	binary.LittleEndian.PutUint16(dst[start-2:], uint16(len(dst)-start))
	return dst
}

// AppendLoginAck appends a LOGINACK token.
func AppendLoginAck(dst []byte, la *LoginAck) []byte {
	dst = append(dst, byte(TokenLoginAck), 0, 0)
	start := len(dst)
	dst = append(dst, la.Interface)
	dst = binary.BigEndian.AppendUint32(dst, la.TDSVersion)
	dst = appendBVarchar(dst, la.ProgName)
	dst = append(dst, la.ProgVer[:]...)
	binary.LittleEndian.PutUint16(dst[start-2:], uint16(len(dst)-start))
	return dst
}

// AppendEnvChange appends an ENVCHANGE token, encoding its values as the
// type requires.
func AppendEnvChange(dst []byte, e EnvChange) []byte {
	dst = append(dst, byte(TokenEnvChange), 0, 0)
	start := len(dst)
	dst = append(dst, e.Type)
	switch envValueKind(e.Type) {
	case 's':
		dst = append(dst, byte(len(e.New)/2))
		dst = append(dst, e.New...)
		dst = append(dst, byte(len(e.Old)/2))
		dst = append(dst, e.Old...)
	case 'L':
		dst = appendU32(dst, uint32(len(e.New)))
		dst = append(dst, e.New...)
		dst = appendBVarbyte(dst, e.Old)
	case 'R':
		dst = appendU16(dst, uint16(len(e.New)))
		dst = append(dst, e.New...)
		dst = appendU16(dst, uint16(len(e.Old)))
		dst = append(dst, e.Old...)
	default:
		dst = appendBVarbyte(dst, e.New)
		dst = appendBVarbyte(dst, e.Old)
	}
	binary.LittleEndian.PutUint16(dst[start-2:], uint16(len(dst)-start))
	return dst
}

// AppendDone appends a DONE, DONEPROC or DONEINPROC token.
func AppendDone(dst []byte, t TokenType, d Done, version uint32) []byte {
	dst = append(dst, byte(t))
	dst = appendU16(dst, d.Status)
	dst = appendU16(dst, d.CurCmd)
	if isTDS72(version) {
		return appendU64(dst, d.RowCount)
	}
	return appendU32(dst, uint32(d.RowCount))
}

// AppendFeatureExtAck appends a FEATUREEXTACK token.
func AppendFeatureExtAck(dst []byte, fs []Feature) []byte {
	dst = append(dst, byte(TokenFeatureExtAck))
	return AppendFeatures(dst, fs)
}

// AppendReturnStatus appends a RETURNSTATUS token.
func AppendReturnStatus(dst []byte, v int32) []byte {
	return appendU32(append(dst, byte(TokenReturnStatus)), uint32(v))
}

// LoginFailure builds the complete payload of a login-failure response:
// an ERROR token, then DONE with DONE_ERROR. Send it as a REPLY message
// (AppendPackets with PacketReply) instead of a LOGINACK; clients show
// "Msg <number>, Level <class>, State <state>".
func LoginFailure(number int32, state, class uint8, message, serverName string, version uint32) []byte {
	b := AppendError(nil, &ErrorToken{Number: number, State: state, Class: class, Message: message, ServerName: serverName, LineNumber: 1}, false, version)
	return AppendDone(b, TokenDone, Done{Status: DoneError}, version)
}

// LoginFailureMessage is LoginFailure framed as a whole REPLY message.
func LoginFailureMessage(number int32, state, class uint8, message, serverName string, version uint32, packetSize int) []byte {
	return AppendPackets(nil, PacketReply, 0, 0, 1, packetSize, LoginFailure(number, state, class, message, serverName, version))
}

// LegacyLoginRefusal builds a complete REPLY message refusing a TDS
// 4.2/5.0 login (packet type 0x02) in the token layout those clients read:
// an ERROR token with single-byte text and a DONE with a 4-byte count.
// FreeTDS, for one, retries a failed TDS 7 login this way, and this is
// what it then prints.
func LegacyLoginRefusal(number int32, class uint8, message, serverName string) []byte {
	ascii := func(s string, max int) []byte {
		b := make([]byte, 0, len(s))
		for _, r := range s {
			if r > 0x7E || r < 0x20 {
				r = '?'
			}
			b = append(b, byte(r))
		}
		if len(b) > max {
			b = b[:max]
		}
		return b
	}
	msg := ascii(message, 4000)
	srv := ascii(serverName, 255)
	body := appendU32(nil, uint32(number))
	body = append(body, 1, class)
	body = appendU16(body, uint16(len(msg)))
	body = append(body, msg...)
	body = append(body, byte(len(srv)))
	body = append(body, srv...)
	body = append(body, 0)    // no procedure name
	body = appendU16(body, 1) // line number
	b := append([]byte{byte(TokenError)}, 0, 0)
	binary.LittleEndian.PutUint16(b[1:], uint16(len(body)))
	b = append(b, body...)
	b = append(b, byte(TokenDone))
	b = appendU16(b, DoneError)
	b = appendU16(b, 0)
	b = appendU32(b, 0)
	return AppendPackets(nil, PacketReply, 0, 0, 1, 512, b)
}
