package relay

import "github.com/tdsgate/tdsgate/pkg/tds"

// walker follows a stream of TDS packets through the chunks it arrives
// in, without holding them: it gathers each 8-byte header (which may be
// split across two chunks, or more), has it parsed, and then counts the
// packet's body down by its length. Nothing but headers is parsed.
//
// States: at a boundary (hn == 0); in a header (0 < hn < 8); in a body
// (hn == 8, left > 0). A packet whose body is empty ends with its header.
type walker struct {
	hdr  [tds.HeaderLen]byte
	hn   int        // header bytes gathered of the current packet
	left int        // body bytes of the current packet still to come
	h    tds.Header // the current packet's header, once hn == HeaderLen
}

// visitor is what a direction does with the packets a walker finds.
// header parses (and may reject) a complete header; body sees the body
// bytes that pass (not those skipped unseen); end is called when a packet
// ends. body may be nil.
type visitor struct {
	header func(hdr []byte) (tds.Header, error)
	body   func(p []byte)
	end    func(h tds.Header)
}

// atBoundary reports whether the stream is between two packets.
func (w *walker) atBoundary() bool { return w.hn == 0 }

// inBody reports whether the stream is inside a packet's body.
func (w *walker) inBody() bool { return w.hn == tds.HeaderLen && w.left > 0 }

// rest is how many more bytes are known to belong to the current packet:
// the rest of its header, or the rest of its body.
func (w *walker) rest() int {
	if w.hn < tds.HeaderLen {
		return tds.HeaderLen - w.hn
	}
	return w.left
}

// walk moves the walker over p, the stream's next bytes, and returns how
// many of them it accepted: len(p), or, when v.header rejects a header,
// the bytes before it (0 if it began in an earlier chunk), and the error.
func (w *walker) walk(p []byte, v *visitor) (int, error) {
	off := 0
	for off < len(p) {
		if w.hn < tds.HeaderLen {
			start := off - w.hn
			k := copy(w.hdr[w.hn:], p[off:])
			w.hn += k
			off += k
			if w.hn < tds.HeaderLen {
				break
			}
			h, err := v.header(w.hdr[:])
			if err != nil {
				w.hn = 0
				return max(start, 0), err
			}
			w.h, w.left = h, int(h.Length)-tds.HeaderLen
			if w.left == 0 {
				w.hn = 0
				v.end(h)
			}
			continue
		}
		k := min(w.left, len(p)-off)
		if v.body != nil {
			v.body(p[off : off+k])
		}
		w.left -= k
		off += k
		if w.left == 0 {
			w.hn = 0
			v.end(w.h)
		}
	}
	return off, nil
}

// skipBody moves the walker over n bytes of the current body without
// seeing them (n ≤ left).
func (w *walker) skipBody(n int, v *visitor) {
	w.left -= n
	if w.left == 0 {
		w.hn = 0
		v.end(w.h)
	}
}
