package tds

import (
	"encoding/binary"
	"math"
)

// cursor reads little-endian values from a byte slice with bounds checks.
// The first failed read records an *Error and every later read returns
// zero values, so parsers read a whole structure and check err once.
type cursor struct {
	b    []byte
	off  int
	what string
	err  *Error
}

func newCursor(b []byte, what string) *cursor { return &cursor{b: b, what: what} }

func (c *cursor) fail(code ErrCode, format string, args ...any) {
	if c.err == nil {
		c.err = errf(code, c.what, format, args...)
	}
}

func (c *cursor) need(n int) bool {
	if c.err != nil {
		return false
	}
	if n < 0 || len(c.b)-c.off < n {
		c.fail(ErrShort, "need %d bytes at offset %d, have %d", n, c.off, len(c.b)-c.off)
		return false
	}
	return true
}

func (c *cursor) remaining() int { return len(c.b) - c.off }

func (c *cursor) bytes(n int) []byte {
	if !c.need(n) {
		return nil
	}
	v := c.b[c.off : c.off+n : c.off+n]
	c.off += n
	return v
}

func (c *cursor) u8() uint8 {
	if !c.need(1) {
		return 0
	}
	v := c.b[c.off]
	c.off++
	return v
}

func (c *cursor) u16() uint16 {
	if !c.need(2) {
		return 0
	}
	v := binary.LittleEndian.Uint16(c.b[c.off:])
	c.off += 2
	return v
}

func (c *cursor) u16be() uint16 {
	if !c.need(2) {
		return 0
	}
	v := binary.BigEndian.Uint16(c.b[c.off:])
	c.off += 2
	return v
}

func (c *cursor) u32() uint32 {
	if !c.need(4) {
		return 0
	}
	v := binary.LittleEndian.Uint32(c.b[c.off:])
	c.off += 4
	return v
}

func (c *cursor) u32be() uint32 {
	if !c.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(c.b[c.off:])
	c.off += 4
	return v
}

func (c *cursor) u64() uint64 {
	if !c.need(8) {
		return 0
	}
	v := binary.LittleEndian.Uint64(c.b[c.off:])
	c.off += 8
	return v
}

func (c *cursor) f64() float64 { return math.Float64frombits(c.u64()) }

// bVarchar reads a B_VARCHAR: a byte count of UCS-2 code units, then the text.
func (c *cursor) bVarchar() string { return decodeUCS2(c.bytes(2 * int(c.u8()))) }

// usVarchar reads a US_VARCHAR: a uint16 count of UCS-2 code units, then the text.
func (c *cursor) usVarchar() string { return decodeUCS2(c.bytes(2 * int(c.u16()))) }

// bVarbyte reads a B_VARBYTE: a byte length, then the bytes.
func (c *cursor) bVarbyte() []byte { return c.bytes(int(c.u8())) }

func appendU16(b []byte, v uint16) []byte { return binary.LittleEndian.AppendUint16(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.LittleEndian.AppendUint32(b, v) }
func appendU64(b []byte, v uint64) []byte { return binary.LittleEndian.AppendUint64(b, v) }

// appendBVarchar appends a B_VARCHAR, truncating text past 255 code units.
func appendBVarchar(b []byte, s string) []byte {
	u := EncodeUCS2(s)
	if len(u) > 255*2 {
		u = u[:255*2]
	}
	b = append(b, byte(len(u)/2))
	return append(b, u...)
}

// appendUSVarchar appends a US_VARCHAR, truncating text past 65535 code units.
func appendUSVarchar(b []byte, s string) []byte {
	u := EncodeUCS2(s)
	if len(u) > 65535*2 {
		u = u[:65535*2]
	}
	b = appendU16(b, uint16(len(u)/2))
	return append(b, u...)
}

func appendBVarbyte(b []byte, v []byte) []byte {
	if len(v) > 255 {
		v = v[:255]
	}
	b = append(b, byte(len(v)))
	return append(b, v...)
}
