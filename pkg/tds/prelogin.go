package tds

import (
	"encoding/binary"
	"fmt"
)

// PreloginToken identifies a PRELOGIN option ([MS-TDS] 2.2.6.5).
type PreloginToken uint8

// PRELOGIN option tokens.
const (
	PLVersion         PreloginToken = 0x00
	PLEncryption      PreloginToken = 0x01
	PLInstOpt         PreloginToken = 0x02
	PLThreadID        PreloginToken = 0x03
	PLMARS            PreloginToken = 0x04
	PLTraceID         PreloginToken = 0x05
	PLFedAuthRequired PreloginToken = 0x06
	PLNonceOpt        PreloginToken = 0x07
	PLTerminator      PreloginToken = 0xFF
)

func (t PreloginToken) String() string {
	switch t {
	case PLVersion:
		return "VERSION"
	case PLEncryption:
		return "ENCRYPTION"
	case PLInstOpt:
		return "INSTOPT"
	case PLThreadID:
		return "THREADID"
	case PLMARS:
		return "MARS"
	case PLTraceID:
		return "TRACEID"
	case PLFedAuthRequired:
		return "FEDAUTHREQUIRED"
	case PLNonceOpt:
		return "NONCEOPT"
	case PLTerminator:
		return "TERMINATOR"
	}
	return fmt.Sprintf("PreloginToken(0x%02x)", uint8(t))
}

// ENCRYPTION option values ([MS-TDS] 2.2.6.5).
const (
	// EncryptOff: the client supports TLS but wants it for LOGIN7 only.
	EncryptOff uint8 = 0x00
	// EncryptOn: TLS for the whole session.
	EncryptOn uint8 = 0x01
	// EncryptNotSup: no TLS at all.
	EncryptNotSup uint8 = 0x02
	// EncryptReq: TLS is required for the whole session.
	EncryptReq uint8 = 0x03
	// EncryptStrict: sent inside TLS by TDS 8.0 clients (go-mssqldb encrypt=strict).
	EncryptStrict uint8 = 0x04
	// EncryptClientCertMask marks certificate authentication (ORed in by TDS 7.4 clients).
	EncryptClientCertMask uint8 = 0x80
)

// preloginFixedLen gives the lengths the spec fixes for known options; -1
// means any length (INSTOPT), and THREADID may also be empty (a server's
// response carries it with length 0).
var preloginFixedLen = map[PreloginToken]int{
	PLVersion:         6,
	PLEncryption:      1,
	PLThreadID:        4,
	PLMARS:            1,
	PLTraceID:         36,
	PLFedAuthRequired: 1,
	PLNonceOpt:        32,
}

// PreloginOption is one option of a PRELOGIN message.
type PreloginOption struct {
	Token PreloginToken
	Data  []byte
}

// Prelogin is a PRELOGIN message: its options in wire order. Options the
// spec does not define are kept, so a message round-trips byte for byte.
type Prelogin struct {
	Options []PreloginOption
}

// Version is the VERSION option: for a client its library version, for a
// server the product version (16.0.1000 for SQL Server 2022 RTM).
type Version struct {
	Major, Minor uint8
	Build        uint16
	SubBuild     uint16
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d.%d", v.Major, v.Minor, v.Build, v.SubBuild)
}

// ParsePrelogin decodes the payload of a PRELOGIN message (the bytes after
// the packet header). Every option's offset and length is checked against
// the payload and against the option table's own end.
func ParsePrelogin(b []byte) (*Prelogin, error) {
	const what = "PRELOGIN"
	p := &Prelogin{}
	// Find the terminator first: option data must start at or after it.
	tableEnd := -1
	for i := 0; i < len(b); i += 5 {
		if b[i] == byte(PLTerminator) {
			tableEnd = i + 1
			break
		}
		if i+5 > len(b) {
			break
		}
	}
	if tableEnd < 0 {
		return nil, errf(ErrShort, what, "option table has no terminator")
	}
	seen := map[PreloginToken]bool{}
	for i := 0; i+5 <= tableEnd; i += 5 {
		tok := PreloginToken(b[i])
		off := int(binary.BigEndian.Uint16(b[i+1:]))
		n := int(binary.BigEndian.Uint16(b[i+3:]))
		if off < tableEnd || off+n > len(b) {
			return nil, errf(ErrBadLength, what, "option %v at offset %d length %d outside payload of %d (table ends at %d)", tok, off, n, len(b), tableEnd)
		}
		if want, ok := preloginFixedLen[tok]; ok && n != want && !(tok == PLThreadID && n == 0) {
			return nil, errf(ErrBadLength, what, "option %v has length %d, want %d", tok, n, want)
		}
		if seen[tok] {
			return nil, errf(ErrBadValue, what, "option %v repeated", tok)
		}
		seen[tok] = true
		p.Options = append(p.Options, PreloginOption{Token: tok, Data: b[off : off+n : off+n]})
	}
	return p, nil
}

// Append encodes p as a PRELOGIN payload, options in order, data packed
// after the table.
func (p *Prelogin) Append(dst []byte) []byte {
	table := 5*len(p.Options) + 1
	off := table
	start := len(dst)
	for _, o := range p.Options {
		dst = append(dst, byte(o.Token))
		dst = binary.BigEndian.AppendUint16(dst, uint16(off))
		dst = binary.BigEndian.AppendUint16(dst, uint16(len(o.Data)))
		off += len(o.Data)
	}
	dst = append(dst, byte(PLTerminator))
	for _, o := range p.Options {
		dst = append(dst, o.Data...)
	}
	_ = start
	return dst
}

// Get returns an option's data.
func (p *Prelogin) Get(t PreloginToken) ([]byte, bool) {
	for _, o := range p.Options {
		if o.Token == t {
			return o.Data, true
		}
	}
	return nil, false
}

// Set replaces an option's data, or appends the option.
func (p *Prelogin) Set(t PreloginToken, data []byte) {
	for i := range p.Options {
		if p.Options[i].Token == t {
			p.Options[i].Data = data
			return
		}
	}
	p.Options = append(p.Options, PreloginOption{Token: t, Data: data})
}

// Del removes an option.
func (p *Prelogin) Del(t PreloginToken) {
	out := p.Options[:0]
	for _, o := range p.Options {
		if o.Token != t {
			out = append(out, o)
		}
	}
	p.Options = out
}

// Encryption returns the ENCRYPTION option.
func (p *Prelogin) Encryption() (uint8, bool) {
	d, ok := p.Get(PLEncryption)
	if !ok || len(d) != 1 {
		return 0, false
	}
	return d[0], true
}

// SetEncryption sets the ENCRYPTION option.
func (p *Prelogin) SetEncryption(v uint8) { p.Set(PLEncryption, []byte{v}) }

// Version returns the VERSION option.
func (p *Prelogin) Version() (Version, bool) {
	d, ok := p.Get(PLVersion)
	if !ok || len(d) != 6 {
		return Version{}, false
	}
	return Version{Major: d[0], Minor: d[1], Build: binary.BigEndian.Uint16(d[2:]), SubBuild: binary.LittleEndian.Uint16(d[4:])}, true
}

// SetVersion sets the VERSION option.
func (p *Prelogin) SetVersion(v Version) {
	d := []byte{v.Major, v.Minor, 0, 0, 0, 0}
	binary.BigEndian.PutUint16(d[2:], v.Build)
	binary.LittleEndian.PutUint16(d[4:], v.SubBuild)
	p.Set(PLVersion, d)
}

// MARS returns the MARS option.
func (p *Prelogin) MARS() (bool, bool) {
	d, ok := p.Get(PLMARS)
	if !ok || len(d) != 1 {
		return false, false
	}
	return d[0] == 1, true
}

// InstOpt returns the INSTOPT option without its terminating NUL.
func (p *Prelogin) InstOpt() (string, bool) {
	d, ok := p.Get(PLInstOpt)
	if !ok {
		return "", false
	}
	for i, c := range d {
		if c == 0 {
			d = d[:i]
			break
		}
	}
	return string(d), true
}

// ThreadID returns the THREADID option (absent or empty: false).
func (p *Prelogin) ThreadID() (uint32, bool) {
	d, ok := p.Get(PLThreadID)
	if !ok || len(d) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(d), true
}

// TraceID returns the TRACEID option: the connection id (GUID, 16 bytes),
// the activity id (16 bytes) and the activity sequence.
func (p *Prelogin) TraceID() (connID, activityID []byte, seq uint32, ok bool) {
	d, ok := p.Get(PLTraceID)
	if !ok || len(d) != 36 {
		return nil, nil, 0, false
	}
	return d[:16], d[16:32], binary.LittleEndian.Uint32(d[32:]), true
}

// FedAuthRequired returns the FEDAUTHREQUIRED option.
func (p *Prelogin) FedAuthRequired() (uint8, bool) {
	d, ok := p.Get(PLFedAuthRequired)
	if !ok || len(d) != 1 {
		return 0, false
	}
	return d[0], true
}

// Nonce returns the NONCEOPT option (32 bytes).
func (p *Prelogin) Nonce() ([]byte, bool) {
	d, ok := p.Get(PLNonceOpt)
	if !ok || len(d) != 32 {
		return nil, false
	}
	return d, true
}
