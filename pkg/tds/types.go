package tds

import (
	"encoding/binary"
	"strings"
)

// SQL Server data types as they appear in TYPE_INFO ([MS-TDS] 2.2.5.4).
const (
	TypeNull        uint8 = 0x1F
	TypeInt1        uint8 = 0x30
	TypeBit         uint8 = 0x32
	TypeInt2        uint8 = 0x34
	TypeInt4        uint8 = 0x38
	TypeDateTim4    uint8 = 0x3A
	TypeFlt4        uint8 = 0x3B
	TypeMoney       uint8 = 0x3C
	TypeDateTime    uint8 = 0x3D
	TypeFlt8        uint8 = 0x3E
	TypeMoney4      uint8 = 0x7A
	TypeInt8        uint8 = 0x7F
	TypeGUID        uint8 = 0x24
	TypeIntN        uint8 = 0x26
	TypeDecimal     uint8 = 0x37
	TypeNumeric     uint8 = 0x3F
	TypeBitN        uint8 = 0x68
	TypeDecimalN    uint8 = 0x6A
	TypeNumericN    uint8 = 0x6C
	TypeFltN        uint8 = 0x6D
	TypeMoneyN      uint8 = 0x6E
	TypeDateTimeN   uint8 = 0x6F
	TypeDateN       uint8 = 0x28
	TypeTimeN       uint8 = 0x29
	TypeDateTime2N  uint8 = 0x2A
	TypeDateTimeOfN uint8 = 0x2B
	TypeChar        uint8 = 0x2F
	TypeVarChar     uint8 = 0x27
	TypeBinary      uint8 = 0x2D
	TypeVarBinary   uint8 = 0x25
	TypeBigVarBin   uint8 = 0xA5
	TypeBigVarChar  uint8 = 0xA7
	TypeBigBinary   uint8 = 0xAD
	TypeBigChar     uint8 = 0xAF
	TypeNVarChar    uint8 = 0xE7
	TypeNChar       uint8 = 0xEF
	TypeXML         uint8 = 0xF1
	TypeUDT         uint8 = 0xF0
	TypeText        uint8 = 0x23
	TypeImage       uint8 = 0x22
	TypeNText       uint8 = 0x63
	TypeVariant     uint8 = 0x62
)

// Column flags ([MS-TDS] 2.2.7.4).
const (
	ColFlagNullable    uint16 = 0x0001
	ColFlagIdentity    uint16 = 0x0010
	ColFlagUpdatableRW uint16 = 0x0004 // fUpdateable = read/write (2 bits, value 1 at bit 2)
)

// PLP markers.
const (
	plpNull    uint64 = 0xFFFFFFFFFFFFFFFF
	plpUnknown uint64 = 0xFFFFFFFFFFFFFFFE
	// MaxLen is TYPE_INFO's length for the (MAX) types, which travel as PLP.
	MaxLen = 0xFFFF
)

// Collation is the 5-byte SQL collation.
type Collation [5]byte

// DefaultCollation is SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, flags
// 0xD0 (ignore case, kana, width), sort id 0x34, as SQL Server sends it.
var DefaultCollation = Collation{0x09, 0x04, 0xD0, 0x00, 0x34}

// TypeInfo is a column's TYPE_INFO.
type TypeInfo struct {
	Type      uint8
	Size      int // the length field (bytes) for types that carry one; MaxLen for (MAX)
	Precision uint8
	Scale     uint8
	Collation Collation
	// TableName parts for TEXT/NTEXT/IMAGE columns. They follow TYPE_INFO
	// in COLMETADATA only ([MS-TDS] 2.2.7.4): an RPC parameter or a
	// RETURNVALUE has none.
	TableName []string
	// UDT / XML details are skipped.
}

// ColumnDef is one column of COLMETADATA.
type ColumnDef struct {
	UserType uint32
	Flags    uint16
	Type     TypeInfo
	Name     string
}

// ColMetadata is a decoded COLMETADATA token.
type ColMetadata struct {
	Columns []ColumnDef
}

// lenKind tells how a type's length and values are encoded.
func lenKind(t uint8) byte {
	switch t {
	case TypeNull, TypeInt1, TypeBit, TypeInt2, TypeInt4, TypeDateTim4, TypeFlt4, TypeMoney, TypeDateTime, TypeFlt8, TypeMoney4, TypeInt8:
		return 'f' // fixed: no length in TYPE_INFO, value has no prefix
	case TypeGUID, TypeIntN, TypeDecimal, TypeNumeric, TypeBitN, TypeDecimalN, TypeNumericN, TypeFltN, TypeMoneyN, TypeDateTimeN, TypeChar, TypeVarChar, TypeBinary, TypeVarBinary:
		return 'b' // byte length
	case TypeDateN:
		return 'd' // no length in TYPE_INFO, byte length in value
	case TypeTimeN, TypeDateTime2N, TypeDateTimeOfN:
		return 's' // scale in TYPE_INFO, byte length in value
	case TypeBigVarBin, TypeBigVarChar, TypeBigBinary, TypeBigChar, TypeNVarChar, TypeNChar:
		return 'u' // ushort length (0xFFFF: PLP)
	case TypeXML:
		return 'x'
	case TypeUDT:
		return 'U'
	case TypeText, TypeImage, TypeNText:
		return 'l' // long length, text pointer values
	case TypeVariant:
		return 'v' // long length in TYPE_INFO and value
	}
	return 0
}

func fixedSize(t uint8) int {
	switch t {
	case TypeNull:
		return 0
	case TypeInt1, TypeBit:
		return 1
	case TypeInt2:
		return 2
	case TypeInt4, TypeDateTim4, TypeFlt4, TypeMoney4:
		return 4
	}
	return 8
}

func hasCollation(t uint8) bool {
	switch t {
	case TypeBigVarChar, TypeBigChar, TypeNVarChar, TypeNChar, TypeText, TypeNText:
		return true
	}
	return false
}

func parseTypeInfo(c *cursor) TypeInfo {
	ti := TypeInfo{Type: c.u8()}
	switch lenKind(ti.Type) {
	case 'f':
		ti.Size = fixedSize(ti.Type)
	case 'b':
		ti.Size = int(c.u8())
		if ti.Type == TypeDecimal || ti.Type == TypeNumeric || ti.Type == TypeDecimalN || ti.Type == TypeNumericN {
			ti.Precision = c.u8()
			ti.Scale = c.u8()
		}
	case 'd':
		ti.Size = 3
	case 's':
		ti.Scale = c.u8()
		if ti.Scale > 7 {
			c.fail(ErrBadValue, "scale %d above 7", ti.Scale)
		}
	case 'u':
		ti.Size = int(c.u16())
		if hasCollation(ti.Type) {
			copy(ti.Collation[:], c.bytes(5))
		}
	case 'x':
		if c.u8() != 0 { // schema present
			c.bVarchar()
			c.bVarchar()
			c.usVarchar()
		}
		ti.Size = MaxLen
	case 'U':
		ti.Size = int(c.u16())
		c.bVarchar()
		c.bVarchar()
		c.bVarchar()
		c.usVarchar()
		ti.Size = MaxLen
	case 'l':
		ti.Size = int(c.u32())
		if hasCollation(ti.Type) {
			copy(ti.Collation[:], c.bytes(5))
		}
	case 'v':
		ti.Size = int(c.u32())
	default:
		c.fail(ErrBadType, "unknown data type 0x%02x", ti.Type)
	}
	return ti
}

func parseColMetadata(c *cursor, version uint32) (*ColMetadata, error) {
	n := c.u16()
	if c.err != nil {
		return nil, c.err
	}
	if n == 0xFFFF {
		return nil, nil // no metadata
	}
	m := &ColMetadata{}
	for i := 0; i < int(n); i++ {
		var cd ColumnDef
		if isTDS72(version) {
			cd.UserType = c.u32()
		} else {
			cd.UserType = uint32(c.u16())
		}
		cd.Flags = c.u16()
		cd.Type = parseTypeInfo(c)
		if lenKind(cd.Type.Type) == 'l' {
			cd.Type.TableName = parseTableName(c, version)
		}
		cd.Name = c.bVarchar()
		if c.err != nil {
			return nil, c.err
		}
		m.Columns = append(m.Columns, cd)
	}
	return m, nil
}

// parseTableName reads the TableName of a TEXT/NTEXT/IMAGE column: a
// count of US_VARCHAR parts from TDS 7.2 on, one US_VARCHAR before.
func parseTableName(c *cursor, version uint32) []string {
	if !isTDS72(version) {
		return []string{c.usVarchar()}
	}
	parts := int(c.u8())
	var out []string
	for i := 0; i < parts && c.err == nil; i++ {
		out = append(out, c.usVarchar())
	}
	return out
}

// readParamValue reads an RPC parameter's value (nil for NULL). It differs
// from a ROW value only for TEXT/NTEXT/IMAGE: a parameter carries a 4-byte
// length (0xFFFFFFFF: NULL) and the data, with no text pointer or
// timestamp ([MS-TDS] 2.2.6.6, TYPE_VARBYTE). FreeTDS ODBC sends its
// statement and declaration strings as NTEXT.
func readParamValue(c *cursor, ti *TypeInfo) []byte {
	if lenKind(ti.Type) != 'l' {
		return readValue(c, ti)
	}
	n := c.u32()
	if c.err != nil || n == 0xFFFFFFFF {
		return nil
	}
	if uint64(n) > uint64(c.remaining()) {
		c.fail(ErrBadLength, "value length %d exceeds %d", n, c.remaining())
		return nil
	}
	return c.bytes(int(n))
}

// appendParamValue is AppendValue for an RPC parameter (see readParamValue).
func appendParamValue(dst []byte, ti *TypeInfo, v []byte) []byte {
	if lenKind(ti.Type) != 'l' {
		return AppendValue(dst, ti, v)
	}
	if v == nil {
		return appendU32(dst, 0xFFFFFFFF)
	}
	dst = appendU32(dst, uint32(len(v)))
	return append(dst, v...)
}

// readValue reads one column value and returns its bytes (nil for NULL).
// PLP chunks are concatenated.
func readValue(c *cursor, ti *TypeInfo) []byte {
	switch lenKind(ti.Type) {
	case 'f':
		return c.bytes(fixedSize(ti.Type))
	case 'b', 'd', 's':
		n := int(c.u8())
		if n == 0 && ti.Type != TypeChar && ti.Type != TypeVarChar && ti.Type != TypeBinary && ti.Type != TypeVarBinary {
			return nil
		}
		if n == 0xFF && (ti.Type == TypeChar || ti.Type == TypeVarChar || ti.Type == TypeBinary || ti.Type == TypeVarBinary) {
			return nil
		}
		return c.bytes(n)
	case 'u':
		if ti.Size == MaxLen {
			return readPLP(c)
		}
		n := c.u16()
		if n == 0xFFFF {
			return nil
		}
		return c.bytes(int(n))
	case 'x', 'U':
		return readPLP(c)
	case 'l':
		tp := c.u8()
		if tp == 0 {
			return nil
		}
		c.bytes(int(tp)) // text pointer
		c.bytes(8)       // timestamp
		n := c.u32()
		if c.err == nil && uint64(n) > uint64(c.remaining()) {
			c.fail(ErrBadLength, "value length %d exceeds %d", n, c.remaining())
			return nil
		}
		return c.bytes(int(n))
	case 'v':
		n := c.u32()
		if n == 0 {
			return nil
		}
		if c.err == nil && uint64(n) > uint64(c.remaining()) {
			c.fail(ErrBadLength, "variant length %d exceeds %d", n, c.remaining())
			return nil
		}
		return c.bytes(int(n))
	}
	c.fail(ErrBadType, "cannot read value of type 0x%02x", ti.Type)
	return nil
}

func readPLP(c *cursor) []byte {
	total := c.u64()
	if c.err != nil || total == plpNull {
		return nil
	}
	out := []byte{}
	for {
		n := c.u32()
		if c.err != nil || n == 0 {
			return out
		}
		if uint64(n) > uint64(c.remaining()) {
			c.fail(ErrBadLength, "PLP chunk %d exceeds %d", n, c.remaining())
			return nil
		}
		out = append(out, c.bytes(int(n))...)
	}
}

func parseRow(c *cursor, m *ColMetadata, nbc bool) ([][]byte, error) {
	vals := make([][]byte, len(m.Columns))
	var bitmap []byte
	if nbc {
		bitmap = c.bytes((len(m.Columns) + 7) / 8)
	}
	for i := range m.Columns {
		if nbc && c.err == nil && bitmap[i/8]&(1<<(i%8)) != 0 {
			continue
		}
		vals[i] = readValue(c, &m.Columns[i].Type)
		if c.err != nil {
			return nil, c.err
		}
	}
	return vals, errOrNil(c.err)
}

// AppendTypeInfo appends a TYPE_INFO for the types tdsgate's stand-in sends.
func AppendTypeInfo(dst []byte, ti TypeInfo) []byte {
	dst = append(dst, ti.Type)
	switch lenKind(ti.Type) {
	case 'b':
		dst = append(dst, byte(ti.Size))
		if ti.Type == TypeDecimalN || ti.Type == TypeNumericN || ti.Type == TypeDecimal || ti.Type == TypeNumeric {
			dst = append(dst, ti.Precision, ti.Scale)
		}
	case 's':
		dst = append(dst, ti.Scale)
	case 'u':
		dst = appendU16(dst, uint16(ti.Size))
		if hasCollation(ti.Type) {
			dst = append(dst, ti.Collation[:]...)
		}
	case 'l':
		dst = appendU32(dst, uint32(ti.Size))
		if hasCollation(ti.Type) {
			dst = append(dst, ti.Collation[:]...)
		}
	case 'v':
		dst = appendU32(dst, uint32(ti.Size))
	case 'x':
		dst = append(dst, 0) // no schema
	}
	return dst
}

// AppendColMetadata appends a COLMETADATA token.
func AppendColMetadata(dst []byte, cols []ColumnDef, version uint32) []byte {
	dst = append(dst, byte(TokenColMetadata))
	dst = appendU16(dst, uint16(len(cols)))
	for _, cd := range cols {
		if isTDS72(version) {
			dst = appendU32(dst, cd.UserType)
		} else {
			dst = appendU16(dst, uint16(cd.UserType))
		}
		dst = appendU16(dst, cd.Flags)
		dst = AppendTypeInfo(dst, cd.Type)
		if lenKind(cd.Type.Type) == 'l' {
			if isTDS72(version) {
				dst = append(dst, byte(len(cd.Type.TableName)))
				for _, part := range cd.Type.TableName {
					dst = appendUSVarchar(dst, part)
				}
			} else {
				dst = appendUSVarchar(dst, strings.Join(cd.Type.TableName, "."))
			}
		}
		dst = appendBVarchar(dst, cd.Name)
	}
	return dst
}

// AppendValue appends one ROW value of type ti from its wire bytes (nil:
// NULL). The caller encodes the value itself (see the Encode* helpers);
// this adds the length prefix or PLP framing the type needs.
func AppendValue(dst []byte, ti *TypeInfo, v []byte) []byte {
	switch lenKind(ti.Type) {
	case 'f':
		return append(dst, v...)
	case 'b', 'd', 's':
		if v == nil {
			if ti.Type == TypeChar || ti.Type == TypeVarChar || ti.Type == TypeBinary || ti.Type == TypeVarBinary {
				return append(dst, 0xFF)
			}
			return append(dst, 0)
		}
		dst = append(dst, byte(len(v)))
		return append(dst, v...)
	case 'u':
		if ti.Size == MaxLen {
			return AppendPLP(dst, v)
		}
		if v == nil {
			return appendU16(dst, 0xFFFF)
		}
		dst = appendU16(dst, uint16(len(v)))
		return append(dst, v...)
	case 'x', 'U':
		return AppendPLP(dst, v)
	}
	return dst
}

// AppendPLP appends v as a partially length-prefixed value in one chunk.
func AppendPLP(dst []byte, v []byte) []byte {
	if v == nil {
		return appendU64(dst, plpNull)
	}
	dst = appendU64(dst, uint64(len(v)))
	if len(v) > 0 {
		dst = appendU32(dst, uint32(len(v)))
		dst = append(dst, v...)
	}
	return appendU32(dst, 0)
}

// AppendRow appends a ROW token; vals are wire bytes per column (nil: NULL).
func AppendRow(dst []byte, cols []ColumnDef, vals [][]byte) []byte {
	dst = append(dst, byte(TokenRow))
	for i := range cols {
		dst = AppendValue(dst, &cols[i].Type, vals[i])
	}
	return dst
}

// EncodeInt encodes an integer in size bytes, little-endian.
func EncodeInt(v int64, size int) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, uint64(v))
	return b[:size]
}

// ReturnValue is a RETURNVALUE token: an output parameter of an RPC.
type ReturnValue struct {
	Ordinal  uint16
	Name     string
	Status   uint8 // 0x01: output parameter; 0x02: user-defined function result
	UserType uint32
	Flags    uint16
	Type     TypeInfo
	Value    []byte // wire bytes, nil for NULL
}

// AppendReturnValue appends a RETURNVALUE token ([MS-TDS] 2.2.7.18).
func AppendReturnValue(dst []byte, rv *ReturnValue, version uint32) []byte {
	dst = append(dst, byte(TokenReturnValue))
	dst = appendU16(dst, rv.Ordinal)
	dst = appendBVarchar(dst, rv.Name)
	dst = append(dst, rv.Status)
	if isTDS72(version) {
		dst = appendU32(dst, rv.UserType)
	} else {
		dst = appendU16(dst, uint16(rv.UserType))
	}
	dst = appendU16(dst, rv.Flags)
	dst = AppendTypeInfo(dst, rv.Type)
	return AppendValue(dst, &rv.Type, rv.Value)
}

func parseReturnValue(c *cursor, version uint32) *ReturnValue {
	rv := &ReturnValue{Ordinal: c.u16()}
	rv.Name = c.bVarchar()
	rv.Status = c.u8()
	if isTDS72(version) {
		rv.UserType = c.u32()
	} else {
		rv.UserType = uint32(c.u16())
	}
	rv.Flags = c.u16()
	rv.Type = parseTypeInfo(c)
	rv.Value = readValue(c, &rv.Type)
	return rv
}
