package listener

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// PROXY protocol version 2, as sent by HAProxy's send-proxy-v2.
// Spec: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt, section 2.2.
//
//	offset  size  field
//	0       12    signature \r\n\r\n\0\r\nQUIT\n
//	12      1     version (high nibble, 2) and command (low nibble: 0 LOCAL, 1 PROXY)
//	13      1     address family (high nibble) and transport (low nibble)
//	14      2     length of what follows, big-endian
//	16      len   addresses (TCP4: 12 bytes, TCP6: 36 bytes), then TLVs
const (
	proxyV2FixedLen = 16
	proxyV2Version  = 0x2

	proxyCmdLocal = 0x0
	proxyCmdProxy = 0x1

	proxyFamUnspec = 0x00
	proxyFamTCP4   = 0x11
	proxyFamTCP6   = 0x21
	proxyFamUnix   = 0x31 // AF_UNIX stream: valid, but carries no IP addresses

	proxyTCP4AddrLen = 12 // src ip 4, dst ip 4, src port 2, dst port 2
	proxyTCP6AddrLen = 36 // src ip 16, dst ip 16, src port 2, dst port 2
)

// MaxProxyHeaderLen bounds the length field of a PROXY v2 header (the bytes
// after the 16 fixed ones): room for TCP6 addresses (36) plus the TLVs HAProxy
// sends (ALPN, authority, unique id ≤ 128, SSL info, NOOP padding). A larger
// value is rejected before anything more is read.
const MaxProxyHeaderLen = 512

// DefaultProxyHeaderTimeout is how long Serve waits for a PROXY header on a
// new connection when the PROXY protocol is on (see WithProxyProtocol).
const DefaultProxyHeaderTimeout = 5 * time.Second

// proxyV2Sig is the 12-byte signature that starts every v2 header.
var proxyV2Sig = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// Errors from ParseProxyHeader and ReadProxyHeader. Every one wraps
// ErrProxyHeader, so errors.Is(err, ErrProxyHeader) says "the peer sent
// something that is not a usable PROXY v2 header" (as opposed to a network
// error or a timeout, which are wrapped as they are).
var (
	ErrProxyHeader      = errors.New("invalid PROXY protocol header")
	ErrProxyV1          = fmt.Errorf("%w: PROXY protocol v1 is not supported; use send-proxy-v2", ErrProxyHeader)
	ErrNoProxySignature = fmt.Errorf("%w: missing PROXY protocol v2 signature (connection did not come through a load balancer with send-proxy-v2?)", ErrProxyHeader)
	ErrProxyHeaderLen   = fmt.Errorf("%w: PROXY v2 header length exceeds %d bytes", ErrProxyHeader, MaxProxyHeaderLen)
)

// ProxyHeader is a decoded PROXY v2 header.
type ProxyHeader struct {
	// Local is true for the LOCAL command: the load balancer opened the
	// connection itself (a health check); there are no client addresses.
	Local bool
	// Src and Dst are the client's address and the address it connected to
	// on the load balancer, for the PROXY command over TCP4 or TCP6. Both are
	// invalid (the zero netip.AddrPort) for LOCAL, and for PROXY with a family
	// that carries no IP addresses (UNSPEC, UNIX): then the spec says to use
	// the connection's own endpoints, which ReadProxyHeader does.
	Src, Dst netip.AddrPort
	// Len is the number of bytes the header occupied on the wire
	// (16 + the length field), all of which the parser consumed.
	Len int
}

// ParseProxyHeader reads one PROXY v2 header from r and nothing more: exactly
// 16 bytes, then exactly the number of bytes the length field announces, so
// the bytes after the header stay unread in r. TLVs are skipped. It does no
// buffering and sets no deadlines; ReadProxyHeader does that for a conn.
//
// It rejects, with an error wrapping ErrProxyHeader: a v1 text header
// (ErrProxyV1), anything else without the v2 signature (ErrNoProxySignature),
// a length above MaxProxyHeaderLen (ErrProxyHeaderLen), a version other than 2,
// a command other than LOCAL or PROXY, a PROXY over UDP or an unknown family,
// and a length too short for the family's addresses. A header cut short
// returns an error that wraps both ErrProxyHeader and the read error
// (io.ErrUnexpectedEOF, a timeout, ...).
func ParseProxyHeader(r io.Reader) (ProxyHeader, error) {
	var fixed [proxyV2FixedLen]byte
	n, err := io.ReadFull(r, fixed[:])
	if err != nil {
		// Say what the partial bytes were, if they say anything.
		if perr := checkSignature(fixed[:n]); perr != nil {
			return ProxyHeader{}, perr
		}
		if errors.Is(err, io.EOF) && n == 0 {
			return ProxyHeader{}, fmt.Errorf("%w: connection closed before a PROXY header: %w", ErrProxyHeader, err)
		}
		return ProxyHeader{}, fmt.Errorf("%w: PROXY v2 header cut short after %d of %d bytes: %w", ErrProxyHeader, n, proxyV2FixedLen, err)
	}
	if err := checkSignature(fixed[:]); err != nil {
		return ProxyHeader{}, err
	}
	verCmd, fam := fixed[12], fixed[13]
	length := int(binary.BigEndian.Uint16(fixed[14:16]))
	if v := verCmd >> 4; v != proxyV2Version {
		return ProxyHeader{}, fmt.Errorf("%w: PROXY protocol version %d, want 2", ErrProxyHeader, v)
	}
	cmd := verCmd & 0x0F
	if cmd != proxyCmdLocal && cmd != proxyCmdProxy {
		return ProxyHeader{}, fmt.Errorf("%w: unknown PROXY v2 command 0x%x", ErrProxyHeader, cmd)
	}
	if length > MaxProxyHeaderLen {
		return ProxyHeader{}, fmt.Errorf("%w (got %d)", ErrProxyHeaderLen, length)
	}
	// Validate the family against the length before reading the body, so a
	// bad header fails without waiting for bytes it announced.
	if cmd == proxyCmdProxy {
		switch fam {
		case proxyFamTCP4:
			if length < proxyTCP4AddrLen {
				return ProxyHeader{}, fmt.Errorf("%w: PROXY v2 TCP4 header length %d, need at least %d", ErrProxyHeader, length, proxyTCP4AddrLen)
			}
		case proxyFamTCP6:
			if length < proxyTCP6AddrLen {
				return ProxyHeader{}, fmt.Errorf("%w: PROXY v2 TCP6 header length %d, need at least %d", ErrProxyHeader, length, proxyTCP6AddrLen)
			}
		case proxyFamUnspec, proxyFamUnix:
		default:
			return ProxyHeader{}, fmt.Errorf("%w: PROXY v2 family/transport 0x%02x is not TCP", ErrProxyHeader, fam)
		}
	}
	var bodyBuf [MaxProxyHeaderLen]byte
	body := bodyBuf[:length]
	if n, err := io.ReadFull(r, body); err != nil {
		return ProxyHeader{}, fmt.Errorf("%w: PROXY v2 header cut short after %d of %d bytes: %w", ErrProxyHeader, proxyV2FixedLen+n, proxyV2FixedLen+length, err)
	}
	h := ProxyHeader{Len: proxyV2FixedLen + length}
	if cmd == proxyCmdLocal {
		// The spec: for LOCAL, discard the address block, family included.
		h.Local = true
		return h, nil
	}
	switch fam {
	case proxyFamTCP4:
		src := netip.AddrFrom4([4]byte(body[0:4]))
		dst := netip.AddrFrom4([4]byte(body[4:8]))
		h.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[8:10]))
		h.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(body[10:12]))
	case proxyFamTCP6:
		src := netip.AddrFrom16([16]byte(body[0:16]))
		dst := netip.AddrFrom16([16]byte(body[16:32]))
		h.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(body[32:34]))
		h.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(body[34:36]))
	}
	return h, nil
}

// checkSignature compares b (up to 12 bytes, possibly fewer when the peer
// stopped early) with the v2 signature and explains a mismatch.
func checkSignature(b []byte) error {
	if len(b) > len(proxyV2Sig) {
		b = b[:len(proxyV2Sig)]
	}
	if bytes.Equal(b, proxyV2Sig[:len(b)]) {
		return nil
	}
	const v1 = "PROXY"
	if bytes.HasPrefix(b, []byte(v1)) || (len(b) < len(v1) && bytes.HasPrefix([]byte(v1), b)) {
		return ErrProxyV1
	}
	return ErrNoProxySignature
}

// ReadProxyHeader reads the PROXY v2 header at the start of c, with a read
// deadline of timeout (none if timeout <= 0) that it clears afterwards, and
// returns the client's address (src) and the address the client connected to
// (dst). It reads exactly the header's bytes, unbuffered, so c stays usable
// as it is: a *net.TCPConn stays a raw *net.TCPConn (splice-able), and the
// first byte after the header is the next byte c returns.
//
// For the LOCAL command (a load balancer's health check) and for PROXY with a
// family that carries no IP addresses, src and dst are c's own RemoteAddr and
// LocalAddr. Otherwise they are *net.TCPAddr. Errors are ParseProxyHeader's.
func ReadProxyHeader(c net.Conn, timeout time.Duration) (src, dst net.Addr, err error) {
	if timeout > 0 {
		if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return nil, nil, fmt.Errorf("listener: PROXY header: set deadline: %w", err)
		}
		defer func() {
			if derr := c.SetReadDeadline(time.Time{}); derr != nil && err == nil {
				err = fmt.Errorf("listener: PROXY header: clear deadline: %w", derr)
			}
		}()
	}
	h, err := ParseProxyHeader(c)
	if err != nil {
		return nil, nil, err
	}
	if !h.Src.IsValid() {
		return c.RemoteAddr(), c.LocalAddr(), nil
	}
	return net.TCPAddrFromAddrPort(h.Src), net.TCPAddrFromAddrPort(h.Dst), nil
}

// AppendProxyHeader appends a PROXY v2 header for a TCP connection from src
// to dst (the PROXY command; TCP4 if both are IPv4, else TCP6 with IPv4
// addresses mapped), followed by tlvs as given (already TLV-encoded; may be
// nil). With local set it writes the LOCAL command and no addresses. It is
// for tests and load generators that stand in for HAProxy.
func AppendProxyHeader(b []byte, local bool, src, dst netip.AddrPort, tlvs []byte) []byte {
	b = append(b, proxyV2Sig[:]...)
	if local {
		b = append(b, proxyV2Version<<4|proxyCmdLocal, proxyFamUnspec)
		b = binary.BigEndian.AppendUint16(b, uint16(len(tlvs)))
		return append(b, tlvs...)
	}
	b = append(b, proxyV2Version<<4|proxyCmdProxy)
	s, d := src.Addr().Unmap(), dst.Addr().Unmap()
	if s.Is4() && d.Is4() {
		b = append(b, proxyFamTCP4)
		b = binary.BigEndian.AppendUint16(b, uint16(proxyTCP4AddrLen+len(tlvs)))
		s4, d4 := s.As4(), d.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	} else {
		b = append(b, proxyFamTCP6)
		b = binary.BigEndian.AppendUint16(b, uint16(proxyTCP6AddrLen+len(tlvs)))
		s16, d16 := src.Addr().As16(), dst.Addr().As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	return append(b, tlvs...)
}
