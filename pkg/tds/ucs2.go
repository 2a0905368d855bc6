package tds

import (
	"unicode/utf16"
)

// appendUCS2 appends s encoded as UTF-16LE (what TDS calls UCS-2; surrogate
// pairs pass through as real clients send them).
func appendUCS2(dst []byte, s string) []byte {
	for _, r := range s {
		if r >= 0x10000 {
			r1, r2 := utf16.EncodeRune(r)
			dst = append(dst, byte(r1), byte(r1>>8), byte(r2), byte(r2>>8))
			continue
		}
		if r > 0xFFFF || (r >= 0xD800 && r < 0xE000) {
			r = 0xFFFD
		}
		dst = append(dst, byte(r), byte(r>>8))
	}
	return dst
}

// ucs2Len is the number of UTF-16 code units s encodes to.
func ucs2Len(s string) int {
	n := 0
	for _, r := range s {
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
	}
	return n
}

// decodeUCS2 decodes UTF-16LE bytes. An odd trailing byte is ignored by
// the callers' length checks (lengths are counted in code units).
func decodeUCS2(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
	}
	return string(utf16.Decode(u))
}

// EncodeUCS2 returns s as UTF-16LE bytes.
func EncodeUCS2(s string) []byte { return appendUCS2(nil, s) }

// DecodeUCS2 returns UTF-16LE bytes as a string.
func DecodeUCS2(b []byte) string { return decodeUCS2(b) }
