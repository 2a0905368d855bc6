package tds

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"strings"
	"time"
)

var (
	epoch1900 = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	epoch0001 = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
)

// DecodeValue turns a value's wire bytes (as returned by ROW parsing or
// an RPC parameter) into a Go value: nil, int64, bool, float64, string
// (text, and DECIMAL/NUMERIC/MONEY in canonical decimal form), []byte,
// time.Time, or a GUID string.
func DecodeValue(ti *TypeInfo, b []byte) (any, error) {
	if b == nil || ti.Type == TypeNull {
		return nil, nil
	}
	bad := func() (any, error) {
		return nil, errf(ErrBadLength, "value", "type 0x%02x with %d bytes", ti.Type, len(b))
	}
	switch ti.Type {
	case TypeInt1, TypeInt2, TypeInt4, TypeInt8, TypeIntN:
		switch len(b) {
		case 1:
			return int64(b[0]), nil
		case 2:
			return int64(int16(binary.LittleEndian.Uint16(b))), nil
		case 4:
			return int64(int32(binary.LittleEndian.Uint32(b))), nil
		case 8:
			return int64(binary.LittleEndian.Uint64(b)), nil
		}
		return bad()
	case TypeBit, TypeBitN:
		if len(b) != 1 {
			return bad()
		}
		return b[0] != 0, nil
	case TypeFlt4, TypeFlt8, TypeFltN:
		switch len(b) {
		case 4:
			return float64(math.Float32frombits(binary.LittleEndian.Uint32(b))), nil
		case 8:
			return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
		}
		return bad()
	case TypeMoney, TypeMoney4, TypeMoneyN:
		var v int64
		switch len(b) {
		case 4:
			v = int64(int32(binary.LittleEndian.Uint32(b)))
		case 8:
			v = int64(binary.LittleEndian.Uint32(b))<<32 | int64(binary.LittleEndian.Uint32(b[4:]))
		default:
			return bad()
		}
		return formatScaled(big.NewInt(v), 4), nil
	case TypeDecimal, TypeNumeric, TypeDecimalN, TypeNumericN:
		if len(b) < 1 || len(b) > 17 {
			return bad()
		}
		mag := make([]byte, len(b)-1)
		for i := range mag {
			mag[i] = b[len(b)-1-i]
		}
		v := new(big.Int).SetBytes(mag)
		if b[0] == 0 {
			v.Neg(v)
		}
		return formatScaled(v, int(ti.Scale)), nil
	case TypeBigVarChar, TypeBigChar, TypeVarChar, TypeChar, TypeText:
		return string(b), nil
	case TypeNVarChar, TypeNChar, TypeNText, TypeXML:
		if len(b)%2 != 0 {
			return bad()
		}
		return decodeUCS2(b), nil
	case TypeBigVarBin, TypeBigBinary, TypeVarBinary, TypeBinary, TypeImage, TypeUDT:
		return b, nil
	case TypeGUID:
		if len(b) != 16 {
			return bad()
		}
		return fmt.Sprintf("%08X-%04X-%04X-%X-%X", binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint16(b[4:]), binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:]), nil
	case TypeDateTime, TypeDateTim4, TypeDateTimeN:
		switch len(b) {
		case 4:
			days := binary.LittleEndian.Uint16(b)
			mins := binary.LittleEndian.Uint16(b[2:])
			return epoch1900.AddDate(0, 0, int(days)).Add(time.Duration(mins) * time.Minute), nil
		case 8:
			days := int32(binary.LittleEndian.Uint32(b))
			ticks := binary.LittleEndian.Uint32(b[4:])
			ns := int64(ticks) * 10_000_000 / 3 // 1/300 s in ns
			return epoch1900.AddDate(0, 0, int(days)).Add(time.Duration(ns)), nil
		}
		return bad()
	case TypeDateN:
		if len(b) != 3 {
			return bad()
		}
		return epoch0001.AddDate(0, 0, int(uint24(b))), nil
	case TypeTimeN, TypeDateTime2N, TypeDateTimeOfN:
		tl := timeLen(ti.Scale)
		want := tl
		if ti.Type != TypeTimeN {
			want += 3
		}
		if ti.Type == TypeDateTimeOfN {
			want += 2
		}
		if len(b) != want {
			return bad()
		}
		var ticks uint64
		for i := tl - 1; i >= 0; i-- {
			ticks = ticks<<8 | uint64(b[i])
		}
		d := time.Duration(ticks * uint64(math.Pow10(9-int(ti.Scale))))
		if ti.Type == TypeTimeN {
			return epoch1900.Add(d), nil
		}
		t := epoch0001.AddDate(0, 0, int(uint24(b[tl:]))).Add(d)
		if ti.Type == TypeDateTimeOfN {
			off := int16(binary.LittleEndian.Uint16(b[tl+3:]))
			t = t.In(time.FixedZone("", int(off)*60))
		}
		return t, nil
	case TypeVariant:
		return b, nil
	}
	return nil, errf(ErrUnsupported, "value", "type 0x%02x", ti.Type)
}

func uint24(b []byte) uint32 { return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 }

func timeLen(scale uint8) int {
	switch {
	case scale <= 2:
		return 3
	case scale <= 4:
		return 4
	}
	return 5
}

func formatScaled(v *big.Int, scale int) string {
	neg := v.Sign() < 0
	s := new(big.Int).Abs(v).String()
	if scale > 0 {
		for len(s) <= scale {
			s = "0" + s
		}
		s = s[:len(s)-scale] + "." + s[len(s)-scale:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// DecimalSize is the value length of a DECIMAL of precision p, sign byte included.
func DecimalSize(p uint8) int {
	switch {
	case p <= 9:
		return 5
	case p <= 19:
		return 9
	case p <= 28:
		return 13
	}
	return 17
}

// EncodeDecimal encodes a decimal string ("-12.5") as DECIMAL(p,s) wire bytes.
func EncodeDecimal(s string, p, scale uint8) ([]byte, error) {
	s = strings.TrimSpace(s)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimLeft(s, "+-")
	intPart, frac, _ := strings.Cut(s, ".")
	for len(frac) < int(scale) {
		frac += "0"
	}
	frac = frac[:scale]
	v, ok := new(big.Int).SetString(intPart+frac, 10)
	if intPart+frac == "" {
		v, ok = new(big.Int), true
	}
	if !ok {
		return nil, errf(ErrBadValue, "decimal", "%q is not a number", s)
	}
	n := DecimalSize(p)
	mag := v.Bytes()
	if len(mag) > n-1 {
		return nil, errf(ErrBadValue, "decimal", "%q overflows precision %d", s, p)
	}
	out := make([]byte, n)
	out[0] = 1
	if neg && v.Sign() != 0 {
		out[0] = 0
	}
	for i, c := range mag {
		out[len(mag)-i] = c
	}
	return out, nil
}

// EncodeFloat encodes a FLOAT (8 bytes).
func EncodeFloat(v float64) []byte {
	return binary.LittleEndian.AppendUint64(nil, math.Float64bits(v))
}

// EncodeBool encodes a BIT.
func EncodeBool(v bool) []byte {
	if v {
		return []byte{1}
	}
	return []byte{0}
}

// EncodeDateTime encodes a DATETIME (8 bytes: days since 1900, 1/300 s ticks).
func EncodeDateTime(t time.Time) []byte {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	days := int32((day.Unix() - epoch1900.Unix()) / 86400)
	ticks := uint32((t.Sub(day).Nanoseconds()*3 + 5_000_000) / 10_000_000)
	b := binary.LittleEndian.AppendUint32(nil, uint32(days))
	return binary.LittleEndian.AppendUint32(b, ticks)
}

// EncodeDateTime2 encodes a DATETIME2(scale).
func EncodeDateTime2(t time.Time, scale uint8) []byte {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	ticks := uint64(t.Sub(day).Nanoseconds()) / uint64(math.Pow10(9-int(scale)))
	tl := timeLen(scale)
	b := make([]byte, tl+3)
	for i := 0; i < tl; i++ {
		b[i] = byte(ticks >> (8 * i))
	}
	days := uint32((day.Unix() - epoch0001.Unix()) / 86400)
	b[tl], b[tl+1], b[tl+2] = byte(days), byte(days>>8), byte(days>>16)
	return b
}
