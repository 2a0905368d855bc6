package tds

import (
	"encoding/binary"
	"log/slog"
	"strconv"
)

// TDS versions as carried in LOGIN7 (little-endian on the wire) and
// LOGINACK (big-endian on the wire) ([MS-TDS] 2.2.6.4).
const (
	Version70  uint32 = 0x70000000
	Version71  uint32 = 0x71000000
	Version71b uint32 = 0x71000001
	Version72  uint32 = 0x72090002
	Version73A uint32 = 0x730A0003
	Version73B uint32 = 0x730B0003
	Version74  uint32 = 0x74000004
	Version80  uint32 = 0x08000000 // TDS 8.0 (strict) sends 7.4 in LOGIN7; kept for reference
)

// OptionFlags3 bits.
const (
	// OptFlag3Extension marks that ibExtension points at a FeatureExt block.
	OptFlag3Extension uint8 = 0x10
)

// OptionFlags2 bits.
const (
	// OptFlag2IntSecurity marks integrated (SSPI) authentication.
	OptFlag2IntSecurity uint8 = 0x80
)

// FeatureExt feature ids ([MS-TDS] 2.2.6.4).
const (
	FeatureSessionRecovery uint8 = 0x01
	FeatureFedAuth         uint8 = 0x02
	FeatureColumnEncrypt   uint8 = 0x04
	FeatureGlobalTx        uint8 = 0x05
	FeatureAzureSQLSupport uint8 = 0x08
	FeatureDataClassif     uint8 = 0x09
	FeatureUTF8Support     uint8 = 0x0A
	FeatureAzureSQLDNS     uint8 = 0x0B
	FeatureTerminator      uint8 = 0xFF
)

// login7FixedLen is the fixed part of LOGIN7 since TDS 7.2; TDS 7.0/7.1
// clients (jTDS) send the 86 bytes before ibChangePassword.
const (
	login7FixedLen   = 94
	login7FixedLen71 = 86
	// MaxLogin7Len caps a LOGIN7 message ([MS-TDS]: 128 KiB).
	MaxLogin7Len = 128 * 1024
)

// Login7 is a decoded LOGIN7 message. Password holds the clear text: it is
// obfuscated only on the wire. Login7 implements slog.LogValuer so that a
// logged Login7 never shows the password.
type Login7 struct {
	TDSVersion     uint32
	PacketSize     uint32
	ClientProgVer  uint32
	ClientPID      uint32
	ConnectionID   uint32
	OptionFlags1   uint8
	OptionFlags2   uint8
	TypeFlags      uint8
	OptionFlags3   uint8
	ClientTimeZone int32
	ClientLCID     uint32

	HostName   string
	UserName   string
	Password   string
	AppName    string
	ServerName string
	CltIntName string
	Language   string
	Database   string
	ClientID   [6]byte
	SSPI       []byte
	AtchDBFile string
	// ChangePassword is the new password, in clear text (TDS 7.2+).
	ChangePassword string

	// FeatureExt is the raw FeatureExt block, terminator included, kept
	// intact so a forwarded login carries the client's features unchanged.
	// It is nil when OptionFlags3 has no extension bit.
	FeatureExt []byte
	// Legacy71 records that the message used the TDS 7.1 fixed part (86
	// bytes, no ibChangePassword/cbSSPILong); Append keeps that layout.
	Legacy71 bool
}

// Feature is one entry of a FeatureExt block.
type Feature struct {
	ID   uint8
	Data []byte
}

// LogValue renders the login for logs without the password or SSPI blob.
func (l *Login7) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("tds_version", "0x"+strconv.FormatUint(uint64(l.TDSVersion), 16)),
		slog.String("user", l.UserName),
		slog.String("database", l.Database),
		slog.String("server", l.ServerName),
		slog.String("app", l.AppName),
		slog.String("host", l.HostName),
		slog.Uint64("packet_size", uint64(l.PacketSize)),
	)
}

// ObfuscatePassword encodes a clear-text password as LOGIN7 carries it:
// UCS-2, each byte's nibbles swapped, then XOR 0xA5 ([MS-TDS] 2.2.6.4).
func ObfuscatePassword(pw string) []byte {
	b := EncodeUCS2(pw)
	for i, c := range b {
		b[i] = ((c << 4) | (c >> 4)) ^ 0xA5
	}
	return b
}

// DeobfuscatePassword reverses ObfuscatePassword.
func DeobfuscatePassword(b []byte) string {
	c := make([]byte, len(b))
	for i, v := range b {
		v ^= 0xA5
		c[i] = (v << 4) | (v >> 4)
	}
	return decodeUCS2(c)
}

// ParseFeatures splits a FeatureExt block into features. The block must
// end with the terminator.
func ParseFeatures(b []byte) ([]Feature, error) {
	c := newCursor(b, "FeatureExt")
	var out []Feature
	for {
		id := c.u8()
		if c.err != nil {
			return nil, c.err
		}
		if id == FeatureTerminator {
			return out, nil
		}
		n := c.u32()
		if c.err == nil && uint64(n) > uint64(c.remaining()) {
			return nil, errf(ErrBadLength, "FeatureExt", "feature 0x%02x length %d exceeds %d remaining", id, n, c.remaining())
		}
		d := c.bytes(int(n))
		if c.err != nil {
			return nil, c.err
		}
		out = append(out, Feature{ID: id, Data: d})
	}
}

// AppendFeatures encodes features followed by the terminator.
func AppendFeatures(dst []byte, fs []Feature) []byte {
	for _, f := range fs {
		dst = append(dst, f.ID)
		dst = appendU32(dst, uint32(len(f.Data)))
		dst = append(dst, f.Data...)
	}
	return append(dst, FeatureTerminator)
}

// ParseLogin7 decodes a LOGIN7 payload. The Length field, every
// offset/length pair and the FeatureExt block are checked against the
// bytes present; nothing is read outside b.
func ParseLogin7(b []byte) (*Login7, error) {
	const what = "LOGIN7"
	if len(b) > MaxLogin7Len {
		return nil, errf(ErrTooLarge, what, "%d bytes exceeds %d", len(b), MaxLogin7Len)
	}
	c := newCursor(b, what)
	l := &Login7{}
	length := c.u32()
	if c.err == nil && (int(length) > len(b) || length < login7FixedLen71) {
		return nil, errf(ErrBadLength, what, "Length field %d, payload %d bytes", length, len(b))
	}
	if c.err == nil {
		b = b[:length]
		c.b = b
	}
	l.TDSVersion = c.u32()
	l.PacketSize = c.u32()
	l.ClientProgVer = c.u32()
	l.ClientPID = c.u32()
	l.ConnectionID = c.u32()
	l.OptionFlags1 = c.u8()
	l.OptionFlags2 = c.u8()
	l.TypeFlags = c.u8()
	l.OptionFlags3 = c.u8()
	l.ClientTimeZone = int32(c.u32())
	l.ClientLCID = c.u32()
	type ol struct{ off, n int }
	var pairs [9]ol
	for i := range pairs {
		pairs[i] = ol{int(c.u16()), int(c.u16())}
	}
	copy(l.ClientID[:], c.bytes(6))
	sspi := ol{int(c.u16()), int(c.u16())}
	atch := ol{int(c.u16()), int(c.u16())}
	if c.err != nil {
		return nil, c.err
	}
	// Where the variable part starts tells the fixed part's length: TDS
	// 7.0/7.1 clients end it before ibChangePassword.
	varStart := len(b)
	for _, p := range append(pairs[:], sspi, atch) {
		if p.n > 0 && p.off < varStart {
			varStart = p.off
		}
	}
	chpw := ol{}
	var sspiLong uint32
	if varStart >= login7FixedLen && len(b) >= login7FixedLen {
		chpw = ol{int(c.u16()), int(c.u16())}
		sspiLong = c.u32()
	} else {
		l.Legacy71 = true
	}
	if c.err != nil {
		return nil, c.err
	}
	fixedEnd := c.off
	str := func(name string, p ol) string {
		if c.err != nil || p.n == 0 {
			return ""
		}
		end := p.off + 2*p.n
		if p.off < fixedEnd || end > len(b) {
			c.fail(ErrBadLength, "%s at offset %d, %d chars, outside %d bytes", name, p.off, p.n, len(b))
			return ""
		}
		return decodeUCS2(b[p.off:end])
	}
	l.HostName = str("HostName", pairs[0])
	l.UserName = str("UserName", pairs[1])
	if p := pairs[2]; p.n > 0 && c.err == nil {
		if p.off < fixedEnd || p.off+2*p.n > len(b) {
			c.fail(ErrBadLength, "Password at offset %d, %d chars, outside %d bytes", p.off, p.n, len(b))
		} else {
			l.Password = DeobfuscatePassword(b[p.off : p.off+2*p.n])
		}
	}
	l.AppName = str("AppName", pairs[3])
	l.ServerName = str("ServerName", pairs[4])
	ext := pairs[5] // ibExtension / cbExtension (bytes)
	l.CltIntName = str("CltIntName", pairs[6])
	l.Language = str("Language", pairs[7])
	l.Database = str("Database", pairs[8])
	l.AtchDBFile = str("AtchDBFile", atch)
	if chpw.n > 0 && c.err == nil {
		if chpw.off < fixedEnd || chpw.off+2*chpw.n > len(b) {
			c.fail(ErrBadLength, "ChangePassword at offset %d, %d chars, outside %d bytes", chpw.off, chpw.n, len(b))
		} else {
			l.ChangePassword = DeobfuscatePassword(b[chpw.off : chpw.off+2*chpw.n])
		}
	}
	if c.err != nil {
		return nil, c.err
	}
	if sspi.n > 0 {
		n := sspi.n
		if n == 0xFFFF && sspiLong > 0 {
			n = int(sspiLong)
		}
		if sspi.off < fixedEnd || sspi.off+n > len(b) || n < 0 {
			return nil, errf(ErrBadLength, what, "SSPI at offset %d, %d bytes, outside %d bytes", sspi.off, n, len(b))
		}
		l.SSPI = b[sspi.off : sspi.off+n : sspi.off+n]
	}
	if l.OptionFlags3&OptFlag3Extension != 0 && ext.n > 0 {
		// ibExtension points at a DWORD holding the FeatureExt offset.
		if ext.off < fixedEnd || ext.off+4 > len(b) || ext.n < 4 {
			return nil, errf(ErrBadLength, what, "extension pointer at offset %d, %d bytes, outside %d bytes", ext.off, ext.n, len(b))
		}
		fo := int(binary.LittleEndian.Uint32(b[ext.off:]))
		if fo < fixedEnd || fo >= len(b) {
			return nil, errf(ErrBadLength, what, "FeatureExt at offset %d outside %d bytes", fo, len(b))
		}
		fs, err := ParseFeatures(b[fo:])
		if err != nil {
			return nil, err
		}
		n := 1
		for _, f := range fs {
			n += 5 + len(f.Data)
		}
		l.FeatureExt = b[fo : fo+n : fo+n]
	}
	return l, nil
}

// Features parses the FeatureExt block.
func (l *Login7) Features() ([]Feature, error) {
	if l.FeatureExt == nil {
		return nil, nil
	}
	return ParseFeatures(l.FeatureExt)
}

// Append encodes l as a LOGIN7 payload. The variable data follows the
// fixed part in the order the spec lists it, then the extension pointer
// and the FeatureExt block, the layout real clients use.
func (l *Login7) Append(dst []byte) []byte {
	fixed := login7FixedLen
	if l.Legacy71 {
		fixed = login7FixedLen71
	}
	start := len(dst)
	dst = append(dst, make([]byte, fixed)...)
	h := dst[start:]
	le := binary.LittleEndian
	le.PutUint32(h[4:], l.TDSVersion)
	le.PutUint32(h[8:], l.PacketSize)
	le.PutUint32(h[12:], l.ClientProgVer)
	le.PutUint32(h[16:], l.ClientPID)
	le.PutUint32(h[20:], l.ConnectionID)
	h[24], h[25], h[26], h[27] = l.OptionFlags1, l.OptionFlags2, l.TypeFlags, l.OptionFlags3
	le.PutUint32(h[28:], uint32(l.ClientTimeZone))
	le.PutUint32(h[32:], l.ClientLCID)
	copy(h[72:78], l.ClientID[:])

	pos := 36 // next offset/length slot
	putOL := func(slot int, off, n int) {
		h := dst[start:]
		le.PutUint16(h[slot:], uint16(off))
		le.PutUint16(h[slot+2:], uint16(n))
	}
	addStr := func(slot int, s string) {
		putOL(slot, len(dst)-start, ucs2Len(s))
		dst = appendUCS2(dst, s)
	}
	addStr(pos+0, l.HostName)
	addStr(pos+4, l.UserName)
	putOL(pos+8, len(dst)-start, ucs2Len(l.Password))
	dst = append(dst, ObfuscatePassword(l.Password)...)
	addStr(pos+12, l.AppName)
	addStr(pos+16, l.ServerName)
	extSlot := pos + 20
	putOL(extSlot, len(dst)-start, 0)
	addStr(pos+24, l.CltIntName)
	addStr(pos+28, l.Language)
	addStr(pos+32, l.Database)
	// SSPI
	sspiN := len(l.SSPI)
	if sspiN >= 0xFFFF && !l.Legacy71 {
		putOL(78, len(dst)-start, 0xFFFF)
		le.PutUint32(dst[start+90:], uint32(sspiN))
	} else {
		putOL(78, len(dst)-start, sspiN)
	}
	dst = append(dst, l.SSPI...)
	addStr(82, l.AtchDBFile)
	if !l.Legacy71 {
		putOL(86, len(dst)-start, ucs2Len(l.ChangePassword))
		dst = append(dst, ObfuscatePassword(l.ChangePassword)...)
	}
	if l.FeatureExt != nil && l.OptionFlags3&OptFlag3Extension != 0 {
		ptr := len(dst) - start
		putOL(extSlot, ptr, 4)
		dst = append(dst, 0, 0, 0, 0)
		le.PutUint32(dst[start+ptr:], uint32(len(dst)-start))
		dst = append(dst, l.FeatureExt...)
	}
	le.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}
