package listener

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Backoff bounds for temporary accept errors (EMFILE, ENFILE, ...): the first
// retry waits minAcceptBackoff, each further one twice as long, up to
// maxAcceptBackoff; a successful accept resets it.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

// Log attribute keys used by this package.
const (
	logKeyListener = "listener"
	logKeyRemote   = "remote"
	logKeyError    = "err"
	logKeyBackoff  = "backoff"
)

// Option configures Serve.
type Option func(*serveConfig)

type serveConfig struct {
	logger       *slog.Logger
	keepAlive    time.Duration
	proxyProto   bool
	proxyTimeout time.Duration
	trusted      []netip.Prefix
	wg           *sync.WaitGroup
	maxConns     int64
	live         *atomic.Int64
	refusals     *RefusalLog
	onRefused    func(reason string)
}

// WithTrustedProxies lists the peers allowed to send a PROXY header (with
// WithProxyProtocol). A connection from any other peer is closed at
// accept, before anything is read, and counted as RefusedUntrustedPeer;
// an empty list trusts nobody.
func WithTrustedProxies(prefixes []netip.Prefix) Option {
	return func(c *serveConfig) { c.trusted = append([]netip.Prefix{}, prefixes...) }
}

// WithMaxConns caps the connections Serve holds at once (accepted and
// not yet returned from handle, PROXY header read included). One more is
// closed at accept and counted as RefusedMaxConns. n <= 0: no cap.
func WithMaxConns(n int) Option {
	return func(c *serveConfig) { c.maxConns = int64(n) }
}

// WithConnCount makes Serve keep the number of connections it holds in
// n (for a gauge, and for tests).
func WithConnCount(n *atomic.Int64) Option {
	return func(c *serveConfig) { c.live = n }
}

// WithRefusals logs refused connections through log (once per interval
// and reason) and calls count(reason) for each (a metric). Either may be
// nil.
func WithRefusals(log *RefusalLog, count func(reason string)) Option {
	return func(c *serveConfig) { c.refusals, c.onRefused = log, count }
}

// WithLogger logs accept errors, back-offs and rejected PROXY headers to l.
// Without it Serve logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(c *serveConfig) { c.logger = l }
}

// WithKeepAlive sets the TCP keepalive idle time and probe interval on
// accepted connections: 0 means DefaultKeepAlive, a negative value turns
// keepalive off.
func WithKeepAlive(d time.Duration) Option {
	return func(c *serveConfig) { c.keepAlive = d }
}

// WithProxyProtocol makes Serve expect a PROXY v2 header (HAProxy
// send-proxy-v2) at the start of every connection. The header is read in the
// connection's own goroutine, within timeout (0 means
// DefaultProxyHeaderTimeout), before handle is called; a connection without a
// valid header is logged and closed. handle then receives a *Conn whose
// RemoteAddr and LocalAddr are the header's addresses.
func WithProxyProtocol(timeout time.Duration) Option {
	return func(c *serveConfig) {
		c.proxyProto = true
		c.proxyTimeout = timeout
	}
}

// WithWaitGroup makes Serve call wg.Add(1) in the accept goroutine, before it
// starts the connection's goroutine, and wg.Done() when that goroutine ends
// (after handle returns, or after the connection was closed for a bad PROXY
// header). Since every Add happens before Serve returns, a caller that drains
// can do: cancel ctx, wait for Serve, then wg.Wait() — with no race between
// a session that has just been accepted and the Wait.
func WithWaitGroup(wg *sync.WaitGroup) Option {
	return func(c *serveConfig) { c.wg = wg }
}

// Conn is what Serve passes to handle when the PROXY protocol is on. It embeds
// the accepted *net.TCPConn unwrapped and unbuffered (the header was read
// from it byte-exactly), and reports the addresses from the PROXY header.
//
// Relays that need the raw connection for splice should take it from the
// TCPConn field or with TCPConn. (io.Copy between a Conn and a *net.TCPConn
// splices anyway, through the embedded ReadFrom/WriteTo, but a type switch on
// *net.TCPConn does not see through Conn.)
type Conn struct {
	*net.TCPConn
	remote, local net.Addr
	accepted      time.Time
}

// Accepted is when the connection was accepted, before its PROXY header
// was read: a login deadline counts from here.
func (c *Conn) Accepted() time.Time { return c.accepted }

// RemoteAddr returns the client's address from the PROXY header (for a LOCAL
// header, the peer's own address).
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// LocalAddr returns the address the client connected to on the load balancer,
// from the PROXY header (for a LOCAL header, our own address).
func (c *Conn) LocalAddr() net.Addr { return c.local }

// NetConn returns the underlying *net.TCPConn, like tls.Conn.NetConn.
func (c *Conn) NetConn() net.Conn { return c.TCPConn }

// TCPConn returns the raw *net.TCPConn behind c: c itself, or the one inside
// a *Conn. ok is false for anything else (a TLS conn, a test pipe).
func TCPConn(c net.Conn) (tc *net.TCPConn, ok bool) {
	switch v := c.(type) {
	case *net.TCPConn:
		return v, true
	case *Conn:
		return v.TCPConn, true
	}
	return nil, false
}

// Serve accepts connections on every listener in lns, one accept goroutine
// per listener, and runs handle for each connection in a goroutine of its own.
// handle owns the connection and must close it.
//
// Accepted connections get TCP_NODELAY (Go's default, left as is) and TCP
// keepalive (DefaultKeepAlive unless WithKeepAlive says otherwise). handle
// receives the plain *net.TCPConn, unwrapped, so a relay can splice it —
// unless WithProxyProtocol is set, in which case it receives a *Conn.
//
// Temporary accept errors (EMFILE, ENFILE, ECONNABORTED, ENOBUFS, ENOMEM,
// EPROTO, EPERM, ...) are logged and retried after a back-off of 5 ms doubling
// to 1 s, so running out of file descriptors never turns into a busy loop.
//
// When ctx is canceled, Serve closes every listener, waits for the accept
// goroutines to end and returns nil. It does not wait for the handlers (see
// WithWaitGroup). A connection that Accept returned just as ctx was canceled
// is still handed to handle, not dropped. A listener closed by someone else ends its own accept
// goroutine quietly. Any other accept error closes all listeners and Serve
// returns it, naming the listener. Serve with no listeners returns an error.
func Serve(ctx context.Context, lns []net.Listener, handle func(net.Conn), opts ...Option) error {
	if len(lns) == 0 {
		return errors.New("listener: Serve: no listeners")
	}
	cfg := serveConfig{keepAlive: DefaultKeepAlive, proxyTimeout: DefaultProxyHeaderTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.keepAlive == 0 {
		cfg.keepAlive = DefaultKeepAlive
	}
	if cfg.proxyTimeout <= 0 {
		cfg.proxyTimeout = DefaultProxyHeaderTimeout
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.live == nil {
		cfg.live = new(atomic.Int64)
	}
	if cfg.onRefused == nil {
		cfg.onRefused = func(string) {}
	}
	if cfg.refusals == nil {
		cfg.refusals = NewRefusalLog(cfg.logger, 0)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Closing the listeners is what unblocks Accept: on cancel by the
	// caller, on a failed listener, and (through the deferred cancel) when
	// every accept goroutine has ended on its own.
	var closeOnce sync.Once
	closeAll := func() {
		closeOnce.Do(func() {
			for _, ln := range lns {
				_ = ln.Close()
			}
		})
	}
	go func() {
		<-ctx.Done()
		closeAll()
	}()

	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := acceptLoop(ctx, ln, handle, &cfg); err != nil {
				errOnce.Do(func() { firstErr = err })
				cancel()
			}
		}()
	}
	wg.Wait()
	closeAll()
	return firstErr
}

// acceptLoop accepts on ln until ctx is done or ln fails. It returns nil when
// ln was closed (by Serve on ctx cancel or by someone else), and the error
// otherwise.
func acceptLoop(ctx context.Context, ln net.Listener, handle func(net.Conn), cfg *serveConfig) error {
	log := cfg.logger.With(logKeyListener, ln.Addr().String())
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			if !isTemporaryAcceptError(err) {
				log.Error("accept failed; stopping", logKeyError, err)
				return fmt.Errorf("listener: accept on %s: %w", ln.Addr(), err)
			}
			if backoff == 0 {
				backoff = minAcceptBackoff
			} else {
				backoff = min(2*backoff, maxAcceptBackoff)
			}
			log.Warn("temporary accept error; backing off", logKeyError, err, logKeyBackoff, backoff)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
			continue
		}
		backoff = 0
		// The door: refusals here cost no goroutine and read nothing.
		if n := cfg.live.Add(1); cfg.maxConns > 0 && n > cfg.maxConns {
			cfg.live.Add(-1)
			cfg.refuse(c, RefusedMaxConns, "connection refused: max_client_connections reached", "max_client_connections", cfg.maxConns)
			continue
		}
		if cfg.proxyProto && !cfg.isTrusted(c.RemoteAddr()) {
			cfg.live.Add(-1)
			cfg.refuse(c, RefusedUntrustedPeer, "connection refused: PROXY protocol peer not in proxy_protocol.trusted", "trusted", len(cfg.trusted))
			continue
		}
		if tc, ok := c.(*net.TCPConn); ok {
			setKeepAlive(tc, cfg.keepAlive, log)
		}
		if cfg.wg != nil {
			cfg.wg.Add(1)
		}
		go serveConn(c, handle, cfg, log)
	}
}

// refuse closes c, counts reason and logs it (once per interval).
func (cfg *serveConfig) refuse(c net.Conn, reason, msg string, attrs ...any) {
	// Counted before the close: whoever sees the close sees the count.
	cfg.onRefused(reason)
	cfg.refusals.Refused(reason, c.RemoteAddr().String(), msg, attrs...)
	_ = c.Close()
}

// isTrusted reports whether a is in the trusted PROXY peers.
func (cfg *serveConfig) isTrusted(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip := ta.AddrPort().Addr().Unmap()
	for _, p := range cfg.trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func serveConn(c net.Conn, handle func(net.Conn), cfg *serveConfig, log *slog.Logger) {
	defer cfg.live.Add(-1)
	if cfg.wg != nil {
		defer cfg.wg.Done()
	}
	if !cfg.proxyProto {
		handle(c)
		return
	}
	accepted := time.Now()
	src, dst, err := ReadProxyHeader(c, cfg.proxyTimeout)
	if err != nil {
		// A load balancer's TCP health check connects and closes without a
		// header: not worth a warning, nor a refusal.
		if errors.Is(err, io.EOF) {
			log.Debug("rejected connection: bad PROXY header", logKeyRemote, c.RemoteAddr().String(), logKeyError, err)
			_ = c.Close()
			return
		}
		cfg.refuse(c, RefusedBadProxyHeader, "connection refused: bad PROXY header", logKeyError, err)
		return
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		// Not from a TCP listener; nothing to splice anyway.
		handle(&addrConn{Conn: c, remote: src, local: dst})
		return
	}
	handle(&Conn{TCPConn: tc, remote: src, local: dst, accepted: accepted})
}

// addrConn overrides the addresses of a non-TCP conn (only when Serve is given
// listeners that are not TCP listeners, as in tests).
type addrConn struct {
	net.Conn
	remote, local net.Addr
}

func (c *addrConn) RemoteAddr() net.Addr { return c.remote }
func (c *addrConn) LocalAddr() net.Addr  { return c.local }

func setKeepAlive(tc *net.TCPConn, d time.Duration, log *slog.Logger) {
	var err error
	if d < 0 {
		err = tc.SetKeepAlive(false)
	} else {
		// Count 0: the default (9 probes).
		err = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: d, Interval: d})
	}
	if err != nil {
		// The peer may already be gone (ECONNRESET/EINVAL); handle will see it.
		log.Debug("set keepalive", logKeyRemote, tc.RemoteAddr().String(), logKeyError, err)
	}
}

// isTemporaryAcceptError reports whether an accept error is worth retrying:
// resource exhaustion and a connection that died in the queue.
func isTemporaryAcceptError(err error) bool {
	for _, e := range []syscall.Errno{
		syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS,
		syscall.ENOMEM, syscall.EPROTO, syscall.EPERM, syscall.ECONNRESET,
		syscall.EINTR, syscall.EAGAIN, syscall.ETIMEDOUT,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
