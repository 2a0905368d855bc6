package tds

import "fmt"

// ErrCode classifies a codec failure, so callers can count and log failures
// by kind without matching on message text.
type ErrCode uint8

// Codec error codes.
const (
	// ErrShort means the input ended before a structure it announced.
	ErrShort ErrCode = iota + 1
	// ErrBadLength means a length field is outside what the protocol allows.
	ErrBadLength
	// ErrBadType means a packet or token type is not the one expected or not known.
	ErrBadType
	// ErrTooLarge means a message exceeds the configured reassembly cap.
	ErrTooLarge
	// ErrBadValue means a field holds a value the protocol does not define.
	ErrBadValue
	// ErrUnsupported means a valid but unsupported protocol feature (such as a TDS 4.2 login).
	ErrUnsupported
)

func (c ErrCode) String() string {
	switch c {
	case ErrShort:
		return "short"
	case ErrBadLength:
		return "bad_length"
	case ErrBadType:
		return "bad_type"
	case ErrTooLarge:
		return "too_large"
	case ErrBadValue:
		return "bad_value"
	case ErrUnsupported:
		return "unsupported"
	}
	return fmt.Sprintf("ErrCode(%d)", uint8(c))
}

// Error is the error type returned by every parser in this package.
type Error struct {
	Code ErrCode
	// What names the structure being parsed, e.g. "LOGIN7" or "packet header".
	What string
	Msg  string
}

func (e *Error) Error() string { return "tds: " + e.What + ": " + e.Msg }

func errf(code ErrCode, what, format string, args ...any) *Error {
	return &Error{Code: code, What: what, Msg: fmt.Sprintf(format, args...)}
}
