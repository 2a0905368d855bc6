package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/tdsgate/tdsgate/pkg/tds"
	"github.com/tdsgate/tdsgate/pkg/tds/tdstls"
	"github.com/tdsgate/tdsgate/tools/standin/engine"
)

// conn is one client connection, from PRELOGIN to close.
type conn struct {
	srv *Server
	raw net.Conn
	// rw is the transport after the handshake: raw, or TLS for the session.
	rw         io.ReadWriter
	log        *slog.Logger
	version    uint32 // the TDS version answered in LOGINACK
	packetSize int
	spid       uint16
	login      *tds.Login7
	sess       *engine.Session
	txDesc     uint64 // the current transaction descriptor, 0 outside a transaction
	trancount  int    // @@TRANCOUNT as last reported by the engine
	language   string // the language the client was last told (ENVCHANGE 2)

	prepared   map[int32]prepared
	nextHandle int32

	mu      sync.Mutex
	cancel  context.CancelFunc // of the running request
	readSeq uint64             // request messages read so far
	attnSeq uint64             // readSeq when the last ATTENTION arrived
	left    sync.Once          // leave ran
}

// request is a message with its sequence number among the requests read.
type request struct {
	tds.Message
	seq uint64
}

type prepared struct {
	decl, stmt string
}

func (c *conn) serve() {
	c.log = c.srv.log.With("client", c.raw.RemoteAddr().String())
	ok, err := c.handshake()
	if err != nil {
		c.log.Debug("standin handshake ended", "err", err)
	}
	if !ok {
		return
	}
	defer c.leave()
	defer c.sess.Close()
	c.log.Info("standin session", "spid", c.spid, "user", c.login.UserName, "database", c.sess.Database(), "tds_version", fmt.Sprintf("0x%08x", c.version))
	err = c.requests()
	c.log.Info("standin session closed", "spid", c.spid, "err", err)
}

// leave uncounts the session, once.
func (c *conn) leave() { c.left.Do(c.srv.leave) }

// handshake runs PRELOGIN, TLS and LOGIN7. ok means a session was
// admitted and counted.
func (c *conn) handshake() (ok bool, err error) {
	cfg := &c.srv.cfg
	deadline := time.Now().Add(cfg.LoginTimeout)
	c.raw.SetDeadline(deadline)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()

	var first [3]byte
	if _, err := io.ReadFull(c.raw, first[:]); err != nil {
		return false, err
	}
	var transport net.Conn = tdstls.WithPrefix(c.raw, first[:])
	strict := tdstls.LooksLikeTLSClientHello(first[:])
	if !strict {
		// Refuse anything else at once instead of waiting for the payload
		// its "header" announces.
		switch t := tds.PacketType(first[0]); t {
		case tds.PacketPrelogin, tds.PacketLogin7, tds.PacketPreTDS7Login:
		default:
			return false, fmt.Errorf("first packet type 0x%02x is neither PRELOGIN nor LOGIN7", uint8(t))
		}
	}
	if strict {
		tc, err := tdstls.ServerStrict(ctx, transport, c.srv.tlsCfg)
		if err != nil {
			return false, fmt.Errorf("strict TLS: %w", err)
		}
		transport = tc
	}
	r := tds.NewMessageReader(transport, tds.MaxPacketSize, tds.MaxLogin7Len)
	m, err := r.ReadMessage()
	if err != nil {
		return false, err
	}
	var tlsConn *tls.Conn
	loginOnly := false
	switch m.Type {
	case tds.PacketPrelogin:
		p, err := tds.ParsePrelogin(m.Data)
		if err != nil {
			return false, err
		}
		clientEnc, _ := p.Encryption()
		answer := c.negotiate(clientEnc&^tds.EncryptClientCertMask, strict)
		resp := &tds.Prelogin{}
		resp.SetVersion(tds.Version{Major: 16, Minor: 0, Build: 1000})
		resp.SetEncryption(answer)
		resp.Set(tds.PLInstOpt, []byte{0})
		resp.Set(tds.PLThreadID, nil)
		resp.Set(tds.PLMARS, []byte{0})
		if _, err := transport.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, tds.DefaultPacketSize, resp.Append(nil))); err != nil {
			return false, err
		}
		client := clientEnc &^ tds.EncryptClientCertMask
		if !strict && answer != tds.EncryptNotSup {
			if client == tds.EncryptNotSup {
				return false, errors.New("client cannot do TLS and the server forces encryption")
			}
			tlsConn, err = tdstls.Server(ctx, transport, c.srv.tlsCfg, tds.DefaultPacketSize)
			if err != nil {
				return false, fmt.Errorf("TLS: %w", err)
			}
			loginOnly = answer == tds.EncryptOff
			r = tds.NewMessageReader(tlsConn, tds.MaxPacketSize, tds.MaxLogin7Len)
		}
		if m, err = r.ReadMessage(); err != nil {
			return false, err
		}
	case tds.PacketLogin7:
		// An old client (jTDS with ssl=off) sends LOGIN7 with no PRELOGIN.
		if cfg.Encryption == EncryptionForce {
			c.rw = transport
			c.sendLoginError(tds.ErrNumLoginFailed, 1, 14, "Login failed. The server requires encryption.")
			return false, errors.New("LOGIN7 without PRELOGIN while encryption is forced")
		}
	case tds.PacketPreTDS7Login:
		transport.Write(tds.LegacyLoginRefusal(tds.ErrNumLoginFailed, 14, "Login failed. TDS 4.2/5.0 logins are not supported: use a client speaking TDS 7.1 or later.", cfg.Name))
		return false, errors.New("TDS 4.2/5.0 login refused")
	default:
		return false, fmt.Errorf("unexpected first packet type 0x%02x", uint8(m.Type))
	}
	if m.Type != tds.PacketLogin7 {
		return false, fmt.Errorf("expected LOGIN7, got packet type 0x%02x", uint8(m.Type))
	}
	switch {
	case tlsConn != nil && loginOnly:
		raw, err := tdstls.Detach(tlsConn)
		if err != nil {
			return false, err
		}
		c.rw = raw
	case tlsConn != nil:
		if err := tdstls.AllowReadAhead(tlsConn); err != nil {
			return false, err
		}
		c.rw = tlsConn
	default:
		c.rw = transport
	}
	l, err := tds.ParseLogin7(m.Data)
	if err != nil {
		return false, err
	}
	c.login = l
	ok, err = c.loginSession(l)
	c.raw.SetDeadline(time.Time{})
	return ok, err
}

// negotiate answers a client's ENCRYPTION as SQL Server does.
func (c *conn) negotiate(client uint8, strict bool) uint8 {
	if strict {
		return tds.EncryptOn
	}
	force := c.srv.cfg.Encryption == EncryptionForce
	switch client {
	case tds.EncryptNotSup:
		if force {
			return tds.EncryptReq
		}
		return tds.EncryptNotSup
	case tds.EncryptOff:
		if force {
			return tds.EncryptReq
		}
		return tds.EncryptOff
	default: // ON, REQ
		return tds.EncryptOn
	}
}

// answerVersion is the TDS version the server speaks with a client: the
// client's own, capped at 7.4 (TDS 8.0 strict clients get 7.4 in LOGINACK).
func answerVersion(v uint32) uint32 {
	switch {
	case v == tds.Version80 || v >= tds.Version74:
		return tds.Version74
	case v >= tds.Version73B:
		return tds.Version73B
	case v >= tds.Version73A:
		return tds.Version73A
	case v >= tds.Version72:
		return tds.Version72
	case v >= tds.Version71:
		return tds.Version71b
	}
	return tds.Version71b
}

func (c *conn) sendLoginError(number int32, state, class uint8, msg string) {
	v := c.version
	if v == 0 {
		v = tds.Version74
	}
	c.rw.Write(tds.LoginFailureMessage(number, state, class, msg, c.srv.cfg.Name, v, tds.DefaultPacketSize))
}

// loginSession authenticates l and answers the login.
func (c *conn) loginSession(l *tds.Login7) (bool, error) {
	s := c.srv
	c.version = answerVersion(l.TDSVersion)
	if l.OptionFlags2&tds.OptFlag2IntSecurity != 0 {
		s.failed.Add(1)
		c.sendLoginError(tds.ErrNumLoginFailed, 1, 14, "Login failed. The login is from an untrusted domain and cannot be used with Integrated authentication.")
		return false, errors.New("integrated security not supported")
	}
	pw, known := s.password(l.UserName)
	if !known || pw != l.Password {
		s.failed.Add(1)
		c.sendLoginError(tds.ErrNumLoginFailed, 1, 14, fmt.Sprintf("Login failed for user '%s'.", l.UserName))
		return false, fmt.Errorf("login failed for user %q", l.UserName)
	}
	db := l.Database
	if db == "" {
		db = s.cfg.DefaultDatabase
	}
	if !s.eng.HasDatabase(db) {
		s.failed.Add(1)
		var b []byte
		b = tds.AppendError(b, &tds.ErrorToken{Number: 4060, State: 1, Class: 11, Message: fmt.Sprintf("Cannot open database \"%s\" requested by the login. The login failed.", db), ServerName: s.cfg.Name, LineNumber: 1}, false, c.version)
		b = append(b, tds.LoginFailure(tds.ErrNumLoginFailed, 1, 14, fmt.Sprintf("Login failed for user '%s'.", l.UserName), s.cfg.Name, c.version)...)
		c.rw.Write(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, tds.DefaultPacketSize, b))
		return false, fmt.Errorf("database %q does not exist", db)
	}
	if !s.admit() {
		c.sendLoginError(tds.ErrNumTooManyConns, 1, 20, fmt.Sprintf("Could not connect because the maximum number of '%d' user connections has already been reached. The system administrator can use sp_configure to increase the maximum value. The connection has been closed.", s.cfg.MaxConnections))
		return false, errors.New("max_connections reached")
	}
	c.spid = uint16(s.spid.Add(1))
	sess, err := s.eng.NewSession(engine.SessionInfo{ServerName: s.cfg.Name, SPID: c.spid, Login: l.UserName, Version: versionString}, db)
	if err != nil {
		s.leave()
		c.sendLoginError(tds.ErrNumLoginFailed, 1, 14, fmt.Sprintf("Login failed for user '%s'.", l.UserName))
		return false, err
	}
	c.sess = sess
	c.language = sess.Language()
	c.packetSize = int(l.PacketSize)
	if c.packetSize == 0 {
		c.packetSize = tds.DefaultPacketSize
	}
	c.packetSize = min(max(c.packetSize, tds.MinPacketSize), tds.MaxPacketSize)

	rp := newResponse(c.rw, tds.DefaultPacketSize, c.spid)
	var b []byte
	b = tds.AppendEnvChange(b, tds.EnvString(tds.EnvDatabase, sess.Database(), "master"))
	b = tds.AppendError(b, &tds.ErrorToken{Number: tds.InfoNumDatabaseChanged, State: 2, Class: 0, Message: fmt.Sprintf("Changed database context to '%s'.", sess.Database()), ServerName: s.cfg.Name, LineNumber: 1}, true, c.version)
	b = tds.AppendEnvChange(b, tds.EnvChange{Type: tds.EnvSQLCollation, New: tds.DefaultCollation[:]})
	b = tds.AppendEnvChange(b, tds.EnvString(tds.EnvLanguage, "us_english", ""))
	b = tds.AppendError(b, &tds.ErrorToken{Number: tds.InfoNumLanguageChanged, State: 1, Class: 0, Message: "Changed language setting to us_english.", ServerName: s.cfg.Name, LineNumber: 1}, true, c.version)
	b = tds.AppendLoginAck(b, &tds.LoginAck{Interface: 1, TDSVersion: c.version, ProgName: "Microsoft SQL Server\x00\x00", ProgVer: [4]byte{16, 0, 1000 >> 8, 1000 & 0xFF}})
	b = tds.AppendEnvChange(b, tds.EnvPacketSizeChange(c.packetSize, tds.DefaultPacketSize))
	b = tds.AppendDone(b, tds.TokenDone, tds.Done{}, c.version)
	rp.add(b)
	if err := rp.end(); err != nil {
		s.leave()
		sess.Close()
		return false, err
	}
	return true, nil
}

const versionString = "Microsoft SQL Server 2022 (RTM) - 16.0.1000.6 (X64) \n\ttdsgate stand-in: a subset of T-SQL over SQLite, not a SQL Server\n"

// requests serves requests until the client leaves. A reader goroutine
// turns packets into messages; an ATTENTION cancels the running request
// as soon as it arrives and is answered in order, after that request's
// output, with DONE_ATTN.
func (c *conn) requests() error {
	msgs := make(chan request, 1)
	readErr := make(chan error, 1)
	go func() {
		r := tds.NewMessageReader(c.rw, tds.MaxPacketSize, 64<<20)
		for {
			m, err := r.ReadMessage()
			if err != nil {
				readErr <- err
				close(msgs)
				return
			}
			c.mu.Lock()
			if m.Type == tds.PacketAttention {
				// It cancels the request running now, or the one read
				// before it that has not started yet (see below).
				c.attnSeq = c.readSeq
				if c.cancel != nil {
					c.cancel()
				}
			} else {
				c.readSeq++
			}
			seq := c.readSeq
			c.mu.Unlock()
			msgs <- request{Message: m, seq: seq}
		}
	}()
	defer func() {
		// Uncounted before the client can see the close: a proxy that
		// waits for it before reusing the slot must find the count down.
		c.leave()
		c.raw.Close()
		for range msgs {
		}
	}()
	for m := range msgs {
		if m.Type == tds.PacketAttention {
			c.srv.attns.Add(1)
			rp := newResponse(c.rw, c.packetSize, c.spid)
			rp.add(tds.AppendDone(nil, tds.TokenDone, tds.Done{Status: tds.DoneAttn}, c.version))
			if err := rp.end(); err != nil {
				return err
			}
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		c.mu.Lock()
		c.cancel = cancel
		if c.attnSeq >= m.seq {
			cancel() // the ATTENTION came before the request started
		}
		c.mu.Unlock()
		err := c.request(ctx, m.Message)
		c.mu.Lock()
		c.cancel = nil
		c.mu.Unlock()
		cancel()
		if err != nil {
			return err
		}
	}
	return <-readErr
}

// request serves one request message.
func (c *conn) request(ctx context.Context, m tds.Message) error {
	rp := newResponse(c.rw, c.packetSize, c.spid)
	if m.Status&(tds.StatusResetConnection|tds.StatusResetConnectionSkipTran) != 0 {
		c.srv.resets.Add(1)
		if err := c.sess.Reset(); err != nil {
			c.log.Warn("standin reset", "err", err)
		}
		c.txDesc, c.trancount = 0, 0
		c.prepared = nil
		c.language = c.sess.Language()
		rp.add(tds.AppendEnvChange(nil, tds.EnvChange{Type: tds.EnvResetConnAck}))
	}
	sk := &sink{c: c, rp: rp}
	var err error
	switch m.Type {
	case tds.PacketSQLBatch:
		var b *tds.SQLBatch
		if b, err = tds.ParseSQLBatch(m.Data); err == nil {
			err = c.sess.ExecBatch(ctx, b.Text, nil, sk)
		}
	case tds.PacketRPC:
		var r *tds.RPCRequest
		if r, err = tds.ParseRPC(m.Data); err == nil {
			err = c.rpc(ctx, r, sk)
		}
	case tds.PacketTransMgrReq:
		var r *tds.TransMgrReq
		if r, err = tds.ParseTransMgrReq(m.Data); err == nil {
			err = c.transMgr(r, sk)
		}
	default:
		err = &tds.Error{Code: tds.ErrBadType, What: "request", Msg: fmt.Sprintf("packet type 0x%02x is not a request", uint8(m.Type))}
	}
	var te *tds.Error
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		// A canceled request ends here; the ATTENTION that canceled it is
		// answered next, with DONE_ATTN.
	case errors.As(err, &te):
		sk.Error(&engine.SQLError{Number: 102, State: 1, Class: 16, Message: "Incorrect syntax: malformed request: " + te.Error(), Line: 1})
		sk.Done(engine.Done{Error: true})
	default:
		return err
	}
	sk.finish()
	return rp.end()
}

// transMgr serves a transaction manager request.
func (c *conn) transMgr(r *tds.TransMgrReq, sk *sink) error {
	var err error
	switch r.Type {
	case tds.TMBeginXact:
		if err = c.sess.Begin(); err == nil {
			sk.Tx(engine.TxBegin, c.sess.TranCount())
		}
	case tds.TMCommitXact:
		if err = c.sess.Commit(); err == nil {
			sk.Tx(engine.TxCommit, c.sess.TranCount())
		}
	case tds.TMRollbackXact:
		if err = c.sess.Rollback(); err == nil {
			sk.Tx(engine.TxRollback, c.sess.TranCount())
		}
	case tds.TMSaveXact:
	default:
		err = &engine.SQLError{Number: 8509, State: 1, Class: 16, Message: "The transaction manager request is not supported by the stand-in.", Line: 1}
	}
	if err == nil && (r.Type == tds.TMCommitXact || r.Type == tds.TMRollbackXact) && r.Flags&0x01 != 0 {
		if err = c.sess.Begin(); err == nil {
			sk.Tx(engine.TxBegin, c.sess.TranCount())
		}
	}
	var se *engine.SQLError
	if errors.As(err, &se) {
		sk.Error(se)
		return sk.Done(engine.Done{Error: true, Cmd: engine.CmdTransMgr})
	}
	if err != nil {
		return err
	}
	return sk.Done(engine.Done{Cmd: engine.CmdTransMgr})
}
