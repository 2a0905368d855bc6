package pool

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/tds"
)

// RollbackSQL is the batch that ends a returning connection's open
// transaction. It is sent with RESETCONNECTION, so the server resets the
// session (rolling back, dropping #temp tables, restoring SET options and
// the login's database) before running it: the transaction descriptor a
// batch must carry is then 0 whatever the client left, and nothing of the
// client's — locks above all — survives while the connection sits idle.
const RollbackSQL = "IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION"

// makeSafe brings a connection whose client left to a clean message
// boundary with nothing owed: it sends ATTENTION if a request was in
// flight and reads to the DONE_ATTN, then rolls back and resets, all
// within timeout. It returns "" when the connection may be reused, or the
// reason to close it, and whether it ran the clean-up (a reset).
func (p *Pool) makeSafe(c *Conn, r *relay.FramedResult, timeout time.Duration) (reason string, reset bool) {
	switch r.Broken {
	case relay.BrokenNone:
	case relay.BrokenMARS:
		return ReasonMARS, false
	default:
		return ReasonBroken, false
	}
	if r.ResetSent && !r.ResetAcked && r.ServerMessages > 0 {
		p.log.Warn("pool: the backend answered a request sent with RESETCONNECTION without acknowledging the reset")
		return ReasonResetFailed, false
	}
	if !r.InFlight() && r.ClientMessages == 0 && !r.ResetSent {
		return "", false // the client sent nothing: the session is as it was
	}
	be := c.Backend
	be.Raw.SetDeadline(time.Now().Add(timeout))
	defer be.Raw.SetDeadline(time.Time{})
	if err := cleanUp(be.Conn, r, c.key.TDSVersion, c.PacketSize()); err != nil {
		p.log.Info("pool: could not make a backend connection safe for reuse", "err", err, "in_flight", r.InFlight(),
			"user", c.key.User)
		return ReasonResetFailed, false
	}
	return "", true
}

// cleanUp runs on conn (the backend session's transport): ATTENTION and
// the drain to DONE_ATTN if needed, then RollbackSQL with RESETCONNECTION,
// read to the end of its answer.
func cleanUp(conn net.Conn, r *relay.FramedResult, version uint32, packetSize int) error {
	if r.InFlight() {
		if !r.Attention {
			if _, err := conn.Write(tds.AppendPackets(nil, tds.PacketAttention, 0, 0, 1, packetSize, nil)); err != nil {
				return fmt.Errorf("sending ATTENTION: %w", err)
			}
		}
		if err := drainToAttention(conn, version); err != nil {
			return fmt.Errorf("waiting for DONE_ATTN: %w", err)
		}
	}
	return ResetAndRun(conn, version, packetSize, RollbackSQL)
}

// ResetAndRun sends sql as a batch with RESETCONNECTION on conn (a backend
// session's transport, at a message boundary with nothing owed) and reads
// its answer to the end: it fails unless the answer acknowledges the reset
// (ENVCHANGE 18) and carries no ERROR. The caller bounds it with a
// deadline. pool_mode transaction replays a session's SET options this
// way on a connection another session used last.
func ResetAndRun(conn net.Conn, version uint32, packetSize int, sql string) error {
	batch := tds.AppendSQLBatch(nil, nil, sql)
	if version != tds.Version80 && version < tds.Version72 {
		batch = batch[len((&tds.AllHeaders{}).Append(nil)):] // TDS 7.1: no ALL_HEADERS
	}
	if _, err := conn.Write(tds.AppendPackets(nil, tds.PacketSQLBatch, tds.StatusResetConnection, 0, 1, packetSize, batch)); err != nil {
		return fmt.Errorf("sending the batch: %w", err)
	}
	m, err := tds.NewMessageReader(conn, tds.MaxPacketSize, 1<<20).ReadMessage()
	if err != nil {
		return fmt.Errorf("reading the batch's answer: %w", err)
	}
	tv := version
	if tv == tds.Version80 {
		tv = tds.Version74
	}
	tr := tds.NewTokenReader(m.Data, tv)
	acked := false
	for tr.More() {
		tok, err := tr.Next()
		if err != nil {
			return fmt.Errorf("the batch's answer: %w", err)
		}
		switch {
		case tok.EnvChange != nil && tok.EnvChange.Type == tds.EnvResetConnAck:
			acked = true
		case tok.Type == tds.TokenError:
			return fmt.Errorf("the batch failed: %w", tok.Error)
		}
	}
	if !acked {
		return errors.New("the batch's answer did not acknowledge RESETCONNECTION")
	}
	return nil
}

// drainToAttention reads and drops the server's packets until an answer
// that ends with a DONE carrying DONE_ATTN.
func drainToAttention(conn net.Conn, version uint32) error {
	r := tds.NewMessageReader(conn, tds.MaxPacketSize, 0)
	buf := make([]byte, tds.MaxPacketSize)
	var tail []byte
	for {
		h, err := r.ReadHeader()
		if err != nil {
			return err
		}
		body := buf[:int(h.Length)-tds.HeaderLen]
		if _, err := io.ReadFull(conn, body); err != nil {
			return err
		}
		tail = append(tail, body...)
		if len(tail) > 32 {
			tail = tail[len(tail)-32:]
		}
		if h.EOM() && relay.IsDoneAttn(tail, version) {
			return nil
		}
	}
}
