package frontend

import "github.com/tdsgate/tdsgate/pkg/tds"

// maxPendingToken bounds the bytes of one unfinished token the token watch
// keeps between packets; a longer token (a huge row value) makes the
// answer unreadable for the watch, and the session pins.
const maxPendingToken = 1 << 20

// tokenWatch reads an answer's token stream as its packets go by, for the
// ENVCHANGEs and DONEs a multiplexed session must see (transactions,
// database and language changes, DONE_ATTN). It keeps only the bytes of a
// token split across packets. A stream it cannot read marks it broken
// until the end of the message.
type tokenWatch struct {
	version uint32
	tr      *tds.TokenReader
	pending []byte
	// broken: the answer could not be read.
	broken bool
	// attn: a DONE with DONE_ATTN was seen in the message; failed: its
	// last DONE carried DONE_ERROR (or it could not be read).
	attn, failed bool
}

func newTokenWatch(version uint32) *tokenWatch {
	if version == tds.Version80 {
		version = tds.Version74
	}
	return &tokenWatch{version: version, tr: tds.NewTokenReader(nil, version)}
}

// feed reads the tokens of p, one packet's payload, calling env for each
// ENVCHANGE. eom ends the message: the watch starts afresh after it.
func (w *tokenWatch) feed(p []byte, eom bool, env func(*tds.EnvChange)) {
	if !w.broken {
		b := p
		if len(w.pending) > 0 {
			w.pending = append(w.pending, p...)
			b = w.pending
		}
		w.tr.Continue(b)
		for w.tr.More() {
			tok, err := w.tr.Next()
			if err != nil {
				if eom || len(b)-w.tr.Offset() > maxPendingToken {
					w.broken, w.failed = true, true
				}
				break
			}
			switch {
			case tok.EnvChange != nil:
				env(tok.EnvChange)
			case tok.Done != nil:
				w.attn = w.attn || tok.Done.Status&tds.DoneAttn != 0
				w.failed = tok.Done.Status&(tds.DoneError|tds.DoneSrvError) != 0
			}
		}
		if !w.broken && !eom {
			// The unfinished token's bytes go to the front (copy moves
			// overlapping bytes safely when b is pending itself).
			w.pending = append(w.pending[:0], b[w.tr.Offset():]...)
		}
	}
	if eom {
		w.pending = w.pending[:0]
		w.tr = tds.NewTokenReader(nil, w.version)
	}
}

// endMessage forgets the message's flags (after its end was handled).
func (w *tokenWatch) endMessage() { w.broken, w.attn, w.failed = false, false, false }
