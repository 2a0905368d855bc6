package frontend

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/limiter"
	"github.com/tdsgate/tdsgate/pkg/pin"
	"github.com/tdsgate/tdsgate/pkg/pool"
	"github.com/tdsgate/tdsgate/pkg/relay"
	"github.com/tdsgate/tdsgate/pkg/tds"
)

// multiplexed is pool_mode transaction: the client session holds no
// backend between requests. Each request borrows a connection of its
// sub-pool (pool.Key) for as long as its answer lasts, or its transaction,
// or — pinned — the rest of the session.
//
// # States (the client side; every transition under mu)
//
//	state        backend   leaves to     when
//	idle         none      waiting       a request's first packet, no idle connection of the sub-pool
//	                       in request    a request's first packet, an idle connection borrowed (pool.Borrow)
//	                       idle          ATTENTION: tdsgate answers DONE_ATTN itself
//	waiting      none      in request    a connection handed over (pool.Lend to a waiter), or a slot
//	             (queued)                granted and the client's login made on a new connection
//	                       idle          queue_timeout / queue full: that request is answered 50004 / 50005
//	                                     + DONE_ERROR, the session stays
//	in request   attached  idle          the answer's last packet, nothing owed, no transaction (pool.Lend)
//	                       transaction   the answer's last packet after an ENVCHANGE 8 not yet ended
//	                       pinned        the request (pkg/pin) or its answer changed session state
//	transaction  attached  in request    the next request (same connection)
//	                       idle          an answer ends after ENVCHANGE 9, 10 or 17 ended the transaction
//	                       pinned        as in request
//	pinned       attached  (terminal)    until the client leaves; Release returns it made safe
//
// A connection another session used last (Conn.Owner), or one that misses
// SET options this session ran since (Conn.OwnerSets), is reset: with no
// SET to replay, the request goes with RESETCONNECTION and the ENVCHANGE
// 18 that opens its answer is stripped; with some, a batch of them goes
// first with RESETCONNECTION (pool.ResetAndRun). ATTENTION goes to the
// connection its request is on; with no request in flight tdsgate answers
// DONE_ATTN itself.
//
// The session keeps the client's LOGIN7 (its password included) in memory
// for its life: a new backend connection it opens logs in as the client.
// It is never logged, and goes with the session.
type multiplexed struct {
	s          *session
	b          *Bucket
	l          *tds.Login7
	loginBytes []byte
	key        pool.Key
	ctx        context.Context
	login      *backend.LoginResult
	ps         int // packet size

	wmu sync.Mutex // writes to the client
	out client

	mu     sync.Mutex
	state  muxState
	c      *pool.Conn    // attached connection
	reader chan struct{} // closed when c's answer reader has stopped
	reqs   int           // requests sent on c whose answers have not ended
	attn   int           // ATTENTIONs sent on c whose DONE_ATTN has not come
	// attnBefore: requests sent before the last ATTENTION whose answers
	// have not ended (its DONE_ATTN ends them).
	attnBefore int
	inTran     bool
	mid        bool // inside a client request message
	strip      bool // the next answer opens with the ENVCHANGE 18 to strip
	// hold: keep c after this answer (INSERT BULK: the bulk load follows).
	hold     bool
	pinned   pin.Reason
	stopping bool
	// serverMid: c stopped in the middle of an answer message; broken:
	// c's stream is unusable.
	serverMid bool
	broken    relay.Broken
	// replay is the session's SET history (pin.MergeReplay of the
	// Batch.Replay of its batches that ended without error); replayGen
	// counts its changes (Conn.OwnerSets holds the one a connection ran).
	replay    []string
	replayGen int
	// pendingReplay is the Replay of the batch being answered, recorded
	// if its answer ends without DONE_ERROR; curLang: it holds a SET
	// LANGUAGE literal (whose ENVCHANGE then does not pin).
	pendingReplay []string
	curLang       bool

	// The request being read (client goroutine only).
	discard error // answer the request with this refusal instead
	scan    []byte
	scanLen int
	reqType tds.PacketType

	c2s, s2c int64
}

type muxState uint8

const (
	muxIdle muxState = iota
	muxWaiting
	muxRequest
	muxTransaction
	muxPinned
)

func (st muxState) String() string {
	return [...]string{"idle", "waiting", "in_request", "in_transaction", "pinned"}[st]
}

// Limits of the request scan.
const (
	// maxScan is the most of a request message kept for pkg/pin; a
	// longer SQL batch or RPC pins its session (reason unscanned).
	maxScan = 1 << 20
	// maxReplay bounds the SET statements a session replays (one per
	// option, pin.MergeReplay); past it the session pins (set_option).
	maxReplay = 64
)

// Pin reasons of the multiplexed relay beyond pkg/pin's (which it uses
// for what both see: pin.UseDatabase for a database ENVCHANGE, pin.Language
// for a language ENVCHANGE no replayable SET LANGUAGE explains,
// pin.DistributedTran for a DTC ENVCHANGE or TM request, pin.MARS,
// pin.Attention, pin.Unknown for an answer it cannot follow).
const (
	PinSessionEnv  pin.Reason = "session_env" // ENVCHANGE 3-7: packet size, collation, sort order
	PinUnscanned   pin.Reason = "unscanned"   // a request too long, or too malformed, to scan
	PinUnshareable pin.Reason = "unshareable" // a login whose connection cannot be shared (no password)
	pinNone        pin.Reason = ""
)

// PinReasons lists every reason a multiplexed session may pin for.
var PinReasons = append(append([]pin.Reason{}, pin.Reasons...), PinSessionEnv, PinUnscanned, PinUnshareable)

// resetAckTok is the ENVCHANGE 18 at the head of the answer to a request
// sent with RESETCONNECTION.
var resetAckTok = [resetAckLen]byte{byte(tds.TokenEnvChange), 3, 0, tds.EnvResetConnAck, 0, 0}

const resetAckLen = 6

func newMultiplexed(s *session, b *Bucket, l *tds.Login7, loginBytes []byte) *multiplexed {
	return &multiplexed{s: s, b: b, l: l, loginBytes: loginBytes, key: pool.KeyOf(l, string(b.Target.Encryption))}
}

// open answers the login from the sub-pool when the password verifies
// against its credential; otherwise the client logs in at the backend on a
// new connection (a slot of the bucket), which decides, and whose answer
// becomes the sub-pool's once accepted.
func (m *multiplexed) open(ctx context.Context) (err error) {
	defer releaseOnFailure(m, &err)
	m.ctx = ctx
	if ans := m.b.Pool.LoginAnswer(m.key, m.l.Password); ans != nil {
		m.login = ans
		m.ps = packetSize(ans)
		m.s.log.Info("pool: login answered by the sub-pool (pool_mode transaction)")
		return nil
	}
	ticket, err := m.s.admit(ctx, m.b.ID)
	if err != nil {
		return err
	}
	m.s.holdSlot(m.b.ID, ticket)
	c := m.b.Pool.Open(m.key, ticket, m.s.id)
	m.c = c
	hook("connect")
	be, res, err := m.s.backendLogin(ctx, m.b, m.l, m.loginBytes)
	if err != nil {
		return err
	}
	c.Activate(be, res)
	m.login, m.ps = res, packetSize(res)
	if res.OK && !c.Adopt(m.l.Password) {
		m.pin(PinUnshareable)
	}
	return nil
}

func packetSize(res *backend.LoginResult) int {
	if res.PacketSize == 0 {
		return tds.DefaultPacketSize
	}
	return res.PacketSize
}

func (m *multiplexed) Login() *backend.LoginResult { return m.login }

var muxBufs = sync.Pool{New: func() any { b := make([]byte, tds.MaxPacketSize); return &b }}

// Relay reads the client's packets until it leaves: requests go to the
// connection attached (borrowed at their first packet), ATTENTION to the
// connection its request is on.
func (m *multiplexed) Relay(cl client) relay.Result {
	m.out = cl
	m.mu.Lock()
	if c := m.c; c != nil {
		// The connection of the client's own login: its to share now,
		// unless the login pinned.
		if m.pinned != pinNone {
			m.attachLocked(c)
		} else {
			m.c = nil
			m.s.slot.Store(nil)
			m.s.setBackend(nil)
			c.Owner, c.OwnerSets = m.s.id, 0
			m.mu.Unlock()
			m.b.Pool.Lend(c)
			m.mu.Lock()
		}
	}
	m.mu.Unlock()
	res := relay.Result{Mode: relay.ModeFramed}
	var hdr [tds.HeaderLen]byte
	for {
		n, err := io.ReadFull(cl.out, hdr[:])
		if err != nil {
			m.mu.Lock()
			mid := m.mid
			m.mu.Unlock()
			res.Ended = relay.SideClient
			if n != 0 || mid {
				m.fail(relay.BrokenClientPartial)
			} else if !errors.Is(err, io.EOF) && !isClosedOrReset(err) {
				res.Err = err
			}
			break
		}
		if hdr[0] == relay.PacketSMP {
			m.pin(pin.MARS)
			m.fail(relay.BrokenMARS)
			res.Err = errors.New("the client sent a MARS (SMP) packet; tdsgate answered MARS=0")
			break
		}
		h, err := tds.ParseHeader(hdr[:], tds.MaxPacketSize)
		if err == nil && h.Type != tds.PacketAttention && !isRequest(h.Type) {
			err = errors.New("client packet of a type that is not a request")
		}
		if err != nil {
			m.fail(relay.BrokenProtocol)
			res.Err = err
			break
		}
		// The buffer is taken per packet: an idle session holds none.
		bp := muxBufs.Get().(*[]byte)
		pkt := (*bp)[:h.Length]
		copy(pkt, hdr[:])
		if _, err := io.ReadFull(cl.out, pkt[tds.HeaderLen:]); err != nil {
			muxBufs.Put(bp)
			m.fail(relay.BrokenClientPartial)
			res.Ended = relay.SideClient
			break
		}
		m.c2s += int64(h.Length)
		if h.Type == tds.PacketAttention {
			err = m.attention(pkt)
		} else {
			err = m.request(h, pkt)
		}
		muxBufs.Put(bp)
		if err != nil {
			res.Err, res.Ended = err, relay.SideServer
			break
		}
	}
	cl.out.Close()
	m.stopReader()
	res.ClientToServer, res.ServerToClient = m.c2s, m.s2c
	return res
}

func isTimeoutErr(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func isClosedOrReset(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "use of closed") || strings.Contains(err.Error(), "reset by peer")
}

func isRequest(t tds.PacketType) bool {
	switch t {
	case tds.PacketSQLBatch, tds.PacketRPC, tds.PacketTransMgrReq, tds.PacketBulkLoad:
		return true
	}
	return false
}

// request relays one packet of a request, borrowing a connection at the
// message's first packet.
func (m *multiplexed) request(h tds.Header, pkt []byte) error {
	m.mu.Lock()
	first := !m.mid
	m.mid = !h.EOM()
	m.mu.Unlock()
	if first {
		m.discard = nil
		m.scan, m.scanLen, m.reqType = m.scan[:0], 0, h.Type
		if err := m.acquire(); err != nil {
			var r *Refusal
			if !errors.As(err, &r) {
				return err
			}
			m.discard = r
		}
	}
	if m.discard != nil {
		if h.EOM() {
			m.answerRefusal(m.discard)
		}
		return nil
	}
	m.scanLen += len(pkt) - tds.HeaderLen
	if m.scanLen <= maxScan && m.reqType != tds.PacketBulkLoad {
		m.scan = append(m.scan, pkt[tds.HeaderLen:]...)
	}
	if first {
		m.mu.Lock()
		if m.strip {
			pkt[1] |= tds.StatusResetConnection
		}
		m.mu.Unlock()
	}
	if h.EOM() {
		// Before the last packet leaves: the answer may end at once, and
		// must find the session pinned if this request pins it.
		m.scanRequest()
		if cap(m.scan) > 64<<10 {
			m.scan = nil // a large request's buffer is not kept while idle
		}
	}
	m.mu.Lock()
	c := m.c
	m.mu.Unlock()
	if _, err := c.Backend.Conn.Write(pkt); err != nil {
		m.fail(relay.BrokenServerClosed)
		return err
	}
	return nil
}

// acquire attaches a connection for a request's first packet: the one
// attached, an idle one of the sub-pool, or one handed over or opened
// after a wait in the bucket's queue.
func (m *multiplexed) acquire() error {
	m.mu.Lock()
	if m.c != nil {
		m.reqs++
		if m.state != muxPinned {
			m.state = muxRequest
		}
		m.mu.Unlock()
		return nil
	}
	m.state = muxWaiting
	m.mu.Unlock()
	start := time.Now()
	c, err := m.borrow()
	if o, ok := m.s.h.Observer.(MuxObserver); ok {
		o.BorrowWait(m.b.ID, time.Since(start), err == nil)
	}
	if err != nil {
		m.mu.Lock()
		m.state = muxIdle
		m.mu.Unlock()
		return err
	}
	strip := false
	m.mu.Lock()
	gen, replay := m.replayGen, m.replay
	m.mu.Unlock()
	if c.Owner != m.s.id || c.OwnerSets != gen {
		if len(replay) == 0 {
			strip = true
		} else if err := m.resetReplay(c, replay); err != nil {
			m.s.log.Warn("pool: replaying the session's SET options after a reset failed; connection closed", "err", err)
			c.Close(pool.ReasonResetFailed)
			m.mu.Lock()
			m.state = muxIdle
			m.mu.Unlock()
			return unavailable(m.b.ID, err)
		}
	}
	c.Owner, c.OwnerSets = m.s.id, gen
	m.mu.Lock()
	m.strip = strip
	m.reqs = 1
	m.state = muxRequest
	m.attachLocked(c)
	m.mu.Unlock()
	return nil
}

// borrow gets a connection of the sub-pool: an idle one, else whichever
// comes first of one handed back by another session and a slot of the
// bucket (limiter queue, queue_timeout), on which it logs in as the
// client.
func (m *multiplexed) borrow() (*pool.Conn, error) {
	p := m.b.Pool
	if c := p.Borrow(m.key, m.s.id); c != nil {
		return c, nil
	}
	w := p.Wait(m.key)
	actx, cancel := context.WithCancel(m.ctx)
	type grant struct {
		t   limiter.Ticket
		err error
	}
	ch := make(chan grant, 1)
	go func() {
		t, err := m.s.h.Limiter.Acquire(actx, m.b.ID)
		ch <- grant{t, err}
	}()
	var g grant
	select {
	case c := <-w.C:
		cancel()
		p.Leave(w)
		if g = <-ch; g.t != nil {
			g.t.Release()
		}
		return c, nil
	case g = <-ch:
		cancel()
	}
	if c := p.Leave(w); c != nil {
		if g.t != nil {
			g.t.Release()
		}
		return c, nil
	}
	if g.err != nil {
		return nil, m.s.admitError(m.ctx, actx, g.err, m.b.ID)
	}
	c := p.Open(m.key, g.t, m.s.id)
	be, res, err := m.s.backendLogin(m.ctx, m.b, m.l, m.loginBytes)
	if err != nil {
		c.Close(pool.ReasonLoginFailed)
		return nil, err
	}
	c.Activate(be, res)
	if !res.OK {
		c.Close(pool.ReasonLoginFailed)
		msg := "the backend refused the login"
		if res.Error != nil {
			msg = res.Error.Message
		}
		return nil, unavailable(m.b.ID, errors.New(msg))
	}
	c.Adopt(m.l.Password)
	return c, nil
}

// resetReplay resets c and runs the session's SET history on it.
func (m *multiplexed) resetReplay(c *pool.Conn, replay []string) error {
	be := c.Backend
	be.Raw.SetDeadline(time.Now().Add(c.ResetTimeout()))
	defer be.Raw.SetDeadline(time.Time{})
	return pool.ResetAndRun(be.Conn, m.l.TDSVersion, m.ps, strings.Join(replay, "\n"))
}

// attachLocked makes c the session's connection and starts reading its
// answers. Called with mu held.
func (m *multiplexed) attachLocked(c *pool.Conn) {
	m.c = c
	m.reader = make(chan struct{})
	m.serverMid, m.stopping = false, false
	m.s.setBackend(c.Backend)
	m.s.slot.Store(&m.b.ID)
	go m.answers(c, m.reader)
}

// scanRequest runs pkg/pin over the request just read, before its last
// packet leaves.
func (m *multiplexed) scanRequest() {
	var reasons []pin.Reason
	var replay []string
	hold := false
	if m.scanLen > maxScan {
		if m.reqType != tds.PacketBulkLoad {
			reasons = append(reasons, PinUnscanned)
		}
	} else {
		switch m.reqType {
		case tds.PacketSQLBatch:
			b, err := tds.ParseSQLBatch(m.scan)
			if err != nil {
				reasons = append(reasons, PinUnscanned)
				break
			}
			sb := pin.ScanBatch(b.Text)
			replay = sb.Replay
			hold = isInsertBulk(b.Text)
			for _, r := range sb.Pins {
				if r != pin.BulkLoad || !hold { // the load keeps the connection (hold), not the session
					reasons = append(reasons, r)
				}
			}
		case tds.PacketRPC:
			r, err := tds.ParseRPC(m.scan)
			if err != nil {
				reasons = append(reasons, PinUnscanned)
				break
			}
			for _, call := range r.Calls {
				reasons = append(reasons, pin.ScanRPC(call.ProcName, call.ProcID)...)
				if isExecuteSQL(call) && len(call.Params) > 0 {
					// Session state made inside dynamic SQL that outlives
					// it: global cursors, app locks, ##temp, CONTEXT_INFO.
					reasons = append(reasons, pin.ScanDynamic(tds.DecodeUCS2(call.Params[0].Value))...)
				}
			}
		case tds.PacketTransMgrReq:
			r, err := tds.ParseTransMgrReq(m.scan)
			if err != nil {
				reasons = append(reasons, PinUnscanned)
				break
			}
			switch r.Type {
			case tds.TMGetDTCAddress, tds.TMPropagateXact, tds.TMPromoteXact:
				reasons = append(reasons, pin.DistributedTran)
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.hold = hold
	m.pendingReplay, m.curLang = replay, false
	for _, r := range replay {
		if strings.Contains(strings.ToUpper(r), "LANGUAGE") {
			m.curLang = true
		}
	}
	if len(reasons) > 0 {
		m.pinLocked(reasons[0], reasons)
	}
}

// isExecuteSQL: the call is sp_executesql (by id or name).
func isExecuteSQL(c tds.RPCCall) bool {
	return c.ProcID == tds.ProcExecuteSQL || strings.EqualFold(strings.TrimPrefix(strings.ToLower(c.ProcName), "sys."), "sp_executesql")
}

// recordReplayLocked adds the answered batch's SET statements to the
// session's history, once its answer ended without error (a SET after a
// failed statement may not have run); c, which ran them, is marked as
// having the new history. Called with mu held.
func (m *multiplexed) recordReplayLocked(c *pool.Conn, failed bool) {
	replay := m.pendingReplay
	m.pendingReplay = nil
	if len(replay) == 0 || failed {
		return
	}
	h := pin.MergeReplay(m.replay, replay)
	if len(h) > maxReplay {
		m.pinLocked(pin.SetOption, nil)
		return
	}
	upToDate := c.OwnerSets == m.replayGen
	m.replay = h
	m.replayGen++
	if upToDate {
		c.OwnerSets = m.replayGen // it ran them
	}
}

// isInsertBulk: the batch starts a bulk load (INSERT BULK), whose data
// follows as a BULKLOAD request on the same connection.
func isInsertBulk(sql string) bool {
	f := strings.Fields(sql)
	return len(f) >= 2 && strings.EqualFold(f[0], "insert") && strings.EqualFold(f[1], "bulk")
}

// attention sends the client's ATTENTION to the connection its request is
// on, or, with no request in flight, answers DONE_ATTN itself.
func (m *multiplexed) attention(pkt []byte) error {
	m.mu.Lock()
	c := m.c
	inFlight := c != nil && (m.reqs > 0 || m.mid)
	if inFlight {
		if m.mid {
			// Cancelled in the middle of its message: the stream's state
			// is for the server to say; keep the connection.
			m.pinLocked(pin.Attention, nil)
		}
		// The server acknowledges each ATTENTION with a DONE_ATTN that
		// ends every request sent before it (attnBefore of them); the
		// connection stays until the last acknowledgement.
		m.attn++
		m.attnBefore = m.reqs
	}
	m.mu.Unlock()
	if !inFlight {
		m.s.log.Debug("pool: ATTENTION with no request in flight, answered by tdsgate")
		m.writeClient(tds.AppendPackets(nil, tds.PacketReply, 0, 0, 1, m.ps,
			tds.AppendDone(nil, tds.TokenDone, tds.Done{Status: tds.DoneAttn}, m.l.TDSVersion)))
		return nil
	}
	if _, err := c.Backend.Conn.Write(pkt); err != nil {
		m.fail(relay.BrokenServerClosed)
		return err
	}
	return nil
}

// answerRefusal answers a request tdsgate could not give a connection:
// ERROR + DONE_ERROR, the session stays.
func (m *multiplexed) answerRefusal(err error) {
	var r *Refusal
	if !errors.As(err, &r) {
		return
	}
	m.s.h.Observer.Refused(m.b.ID, int32(r.Code), r.Code.String())
	m.s.log.Warn("request refused", "code", int32(r.Code), "reason", r.Code.String(), "message", r.Msg)
	m.writeClient(tds.LoginFailureMessage(int32(r.Code), 1, 16, r.Msg, m.s.st.ServerName, m.l.TDSVersion, m.ps))
}

func (m *multiplexed) writeClient(b []byte) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if _, err := m.out.out.Write(b); err == nil {
		m.s2c += int64(len(b))
	}
}

// answers copies c's answers to the client, following their tokens, and
// lends c back at the end of an answer that leaves nothing to keep it
// for. It returns when it lent c, when the session stops it, or when
// either side fails.
func (m *multiplexed) answers(c *pool.Conn, done chan struct{}) {
	defer close(done)
	conn := c.Backend.Conn
	w := newTokenWatch(m.l.TDSVersion)
	var hdr [tds.HeaderLen]byte
	bp := muxBufs.Get().(*[]byte)
	defer muxBufs.Put(bp)
	buf := *bp
	firstOfAnswer := true
	for {
		n, err := io.ReadFull(conn, hdr[:])
		if err != nil {
			m.mu.Lock()
			stopping := m.stopping
			m.mu.Unlock()
			if stopping && n == 0 && isTimeoutErr(err) {
				return // stopped at a packet boundary
			}
			m.fail(relay.BrokenServerClosed)
			m.out.out.Close()
			return
		}
		h, err := tds.ParseHeader(hdr[:], tds.MaxPacketSize)
		if err == nil && h.Type != tds.PacketReply {
			err = errors.New("server packet of a type other than REPLY")
		}
		if err != nil {
			m.fail(relay.BrokenProtocol)
			m.out.out.Close()
			return
		}
		pkt := buf[:h.Length]
		copy(pkt, hdr[:])
		if _, err := io.ReadFull(conn, pkt[tds.HeaderLen:]); err != nil {
			m.fail(relay.BrokenServerClosed)
			m.out.out.Close()
			return
		}
		m.mu.Lock()
		if firstOfAnswer && m.strip {
			m.strip = false
			if p := pkt[tds.HeaderLen:]; len(p) >= resetAckLen && [resetAckLen]byte(p[:resetAckLen]) == resetAckTok {
				copy(pkt[resetAckLen:], pkt[:tds.HeaderLen])
				pkt = pkt[resetAckLen:]
				binary.BigEndian.PutUint16(pkt[2:4], uint16(len(pkt)))
			} else {
				m.s.log.Warn("pool: an answer to a request sent with RESETCONNECTION did not acknowledge it; session pinned")
				m.pinLocked(pin.Unknown, nil)
			}
		}
		firstOfAnswer = h.EOM()
		w.feed(pkt[tds.HeaderLen:], h.EOM(), m.envLocked)
		// The answer's accounting is done before its last packet goes to
		// the client, and the client's write lock is taken before mu is
		// let go: a client that has read the end of its answer and sends
		// an ATTENTION finds nothing in flight (tdsgate answers it), and
		// that DONE_ATTN cannot overtake the answer's last packet.
		eom := h.EOM()
		m.serverMid = !eom
		if eom {
			if w.broken {
				m.pinLocked(pin.Unknown, nil)
			}
			if m.attn > 0 && w.attn {
				// An acknowledgement: the requests sent before the ATTENTION
				// are over (this message may also be the last of one of them).
				m.attn--
				m.reqs = max(m.reqs-m.attnBefore, 0)
				m.attnBefore = 0
				m.pendingReplay = nil
			} else {
				m.reqs = max(m.reqs-1, 0)
				m.attnBefore = max(m.attnBefore-1, 0)
				m.recordReplayLocked(c, w.failed)
			}
			w.endMessage()
		}
		m.wmu.Lock()
		m.mu.Unlock()
		_, werr := m.out.out.Write(pkt)
		m.s2c += int64(len(pkt))
		m.wmu.Unlock()
		if werr != nil {
			m.out.out.Close() // the client is gone; the session ends and returns c
		}
		if !eom {
			continue
		}
		m.mu.Lock()
		if m.reqs > 0 || m.attn > 0 || m.mid || m.stopping {
			m.mu.Unlock()
			continue
		}
		switch {
		case m.pinned != pinNone:
			m.state = muxPinned
		case m.inTran:
			m.state = muxTransaction
			m.s.setState(StateIdleInTransaction, "")
		case m.hold:
			// INSERT BULK answered: its data comes next, to this connection.
		default:
			m.c = nil
			m.state = muxIdle
			m.s.setState(StateActive, "")
			m.s.slot.Store(nil)
			m.s.setBackend(nil)
			m.mu.Unlock()
			m.b.Pool.Lend(c)
			return
		}
		m.mu.Unlock()
	}
}

// envLocked applies an ENVCHANGE of an answer to the session's state.
// Called with mu held.
func (m *multiplexed) envLocked(e *tds.EnvChange) {
	switch e.Type {
	case tds.EnvBeginTran:
		m.inTran = true
	case tds.EnvCommitTran, tds.EnvRollbackTran, tds.EnvTranEnded:
		m.inTran = false
	case tds.EnvEnlistDTC, tds.EnvDefectTran, tds.EnvPromoteTran, tds.EnvTranMgrAddr:
		m.pinLocked(pin.DistributedTran, nil)
	case tds.EnvDatabase:
		m.pinLocked(pin.UseDatabase, nil)
	case tds.EnvLanguage:
		if !m.curLang {
			m.pinLocked(pin.Language, nil)
		}
	case tds.EnvCharset, tds.EnvPacketSize, tds.EnvSortLocale, tds.EnvSortFlags, tds.EnvSQLCollation:
		m.pinLocked(PinSessionEnv, nil)
	}
}

// pin pins the session (see pinLocked).
func (m *multiplexed) pin(r pin.Reason) {
	m.mu.Lock()
	m.pinLocked(r, nil)
	m.mu.Unlock()
}

// pinLocked keeps the session's connection until it leaves, for reason r
// (the first one: later reasons of a pinned session are not counted).
func (m *multiplexed) pinLocked(r pin.Reason, all []pin.Reason) {
	if m.pinned != pinNone {
		return
	}
	m.pinned = r
	if m.c != nil {
		m.state = muxPinned
	}
	attrs := []any{"reason", string(r)}
	if len(all) > 1 {
		attrs = append(attrs, "reasons", all)
	}
	m.s.log.Info("pool: session pinned to its backend connection", attrs...)
	m.s.setState(StatePinned, string(r))
	if o, ok := m.s.h.Observer.(MuxObserver); ok {
		o.Pinned(m.b.ID, string(r))
	}
}

// fail records why the attached connection's stream cannot be trusted.
func (m *multiplexed) fail(b relay.Broken) {
	m.mu.Lock()
	if m.broken == relay.BrokenNone {
		m.broken = b
	}
	m.mu.Unlock()
}

// stopReader stops the answer reader of the attached connection at a
// packet boundary (the client has gone) and waits for it.
func (m *multiplexed) stopReader() {
	m.mu.Lock()
	c, done := m.c, m.reader
	m.stopping = true
	m.mu.Unlock()
	if c == nil || done == nil {
		return
	}
	c.Backend.Raw.SetReadDeadline(time.Now())
	<-done
	c.Backend.Raw.SetReadDeadline(time.Time{})
}

// leg: a multiplexed session holds no backend between its requests.
func (m *multiplexed) leg(net.Conn) (net.Conn, relay.Mode) { return nil, relay.ModeFramed }

// Release returns an attached connection to the pool, made safe (an
// ATTENTION and its DONE_ATTN if an answer is owed, then a reset that
// rolls back); one whose stream broke, whose login failed, or whose
// session was shed, is closed and its slot released.
func (m *multiplexed) Release() {
	m.stopReader()
	m.mu.Lock()
	c := m.c
	m.c = nil
	r := &relay.FramedResult{
		ClientMessages: int64(m.reqs) + 1, ServerMessages: 1, // +1: something was sent; reset it
		Attention: m.attn > 0, ServerMidMessage: m.serverMid, Broken: m.broken,
	}
	m.mu.Unlock()
	if c == nil {
		return
	}
	defer m.s.slot.Store(nil)
	switch {
	case m.s.shed.Load():
		c.Close("lease_shed")
	case m.s.killedOutcome() != "": // an administrator's kill (sessions.go): never lent again
		c.Close(pool.ReasonKilled)
	case c.Login == nil || !c.Login.OK:
		c.Close(pool.ReasonLoginFailed)
	default:
		c.Return(r, m.l.Password)
		m.s.log.Info("pool: connection returned at the session's end", "pool_state", c.State().String(), "pinned", string(m.pinned))
	}
}

// MuxObserver is the Observer's optional part for pool_mode transaction
// and the multiplexing ratio.
type MuxObserver interface {
	// ClientSessions adds delta to the bucket's logged-in client sessions.
	ClientSessions(bucket string, delta int)
	// Pinned counts a session pinned to its backend, by its first reason.
	Pinned(bucket, reason string)
	// BorrowWait is the time a request waited for a backend connection
	// (ok false: it was refused).
	BorrowWait(bucket string, d time.Duration, ok bool)
}
