// Package netfault is a TCP proxy for fault injection: placed between one
// tdsgate instance and Redis, it forwards traffic (Pass), cuts it (Drop:
// every open connection is reset and new ones are refused), or stalls it
// (Stall: connections stay open but no byte moves in either direction,
// as behind a black-holing firewall; new connections are accepted and
// left waiting). Each new connection dials the upstream address the
// Upstream function returns at that moment, so that the proxy can follow
// a Redis primary that moved.
//
// State machine (Set):
//
//	Pass  ──Set(Stall)──▶ Stall   links stop copying; new conns wait
//	Pass  ──Set(Drop)───▶ Drop    links reset; new conns reset at accept
//	Stall ──Set(Pass)───▶ Pass    copying resumes; waiting conns dial up
//	Stall ──Set(Drop)───▶ Drop    as from Pass
//	Drop  ──Set(Pass)───▶ Pass    new conns forwarded
//	Pass  ──StallAfter(m)─▶ Pass, then Stall once the instance has sent
//	                        bytes containing m (those bytes forwarded)
package netfault

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"time"
)

// Mode is what the proxy does with traffic.
type Mode int

// The modes.
const (
	Pass Mode = iota
	Drop
	Stall
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	case Stall:
		return "stall"
	}
	return "?"
}

// Proxy is a running fault-injecting TCP proxy on 127.0.0.1.
type Proxy struct {
	ln       net.Listener
	upstream func() (string, error)

	mu      sync.Mutex
	mode    Mode
	resumed chan struct{} // closed when leaving Stall
	trigger []byte        // StallAfter's match (nil: none)
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// New listens on a free loopback port and forwards to upstream().
func New(upstream func() (string, error)) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}, resumed: make(chan struct{})}
	close(p.resumed)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Fixed returns an Upstream function that always answers addr.
func Fixed(addr string) func() (string, error) {
	return func() (string, error) { return addr, nil }
}

// Addr is the proxy's listen address (give it to the instance as redis.addr).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Mode is the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Set changes the mode (see the package doc). It cancels a StallAfter.
func (p *Proxy) Set(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.trigger = nil
	p.setLocked(m)
}

// StallAfter forwards traffic until the instance sends a chunk that
// contains match, forwards that chunk, and then stalls: a request that
// reaches the upstream and runs there, but whose answer never comes back
// (a partition that falls between the two). The chunk is what one read
// returned: match must fit in one write of the instance's.
func (p *Proxy) StallAfter(match []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setLocked(Pass)
	p.trigger = bytes.Clone(match)
}

// sent fires StallAfter's trigger on a chunk the instance sent.
func (p *Proxy) sent(chunk []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.trigger != nil && bytes.Contains(chunk, p.trigger) {
		p.trigger = nil
		p.setLocked(Stall)
	}
}

func (p *Proxy) setLocked(m Mode) {
	if m == p.mode {
		return
	}
	if p.mode == Stall {
		close(p.resumed)
	}
	if m == Stall {
		p.resumed = make(chan struct{})
	}
	p.mode = m
	if m == Drop {
		p.resetLocked()
	}
}

// Reset resets every open connection, whatever the mode (a peer that
// went away: the instance reconnects, and the new connection dials the
// upstream anew).
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resetLocked()
}

func (p *Proxy) resetLocked() {
	for c := range p.conns {
		reset(c)
	}
}

// reset closes c with a RST (linger 0), as a firewall rejecting would.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	if p.mode == Stall {
		close(p.resumed)
		p.mode = Pass
	}
	p.resetLocked()
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

// gate blocks while the proxy stalls; it reports false when the
// connections must end (Drop or Close).
func (p *Proxy) gate() bool {
	for {
		p.mu.Lock()
		m, ch, closed := p.mode, p.resumed, p.closed
		p.mu.Unlock()
		if closed || m == Drop {
			return false
		}
		if m == Pass {
			return true
		}
		<-ch
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if p.Mode() == Drop || !p.track(c) {
			reset(c)
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	defer p.untrack(c)
	defer c.Close()
	if !p.gate() {
		return
	}
	addr, err := p.upstream()
	if err != nil {
		return
	}
	u, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return
	}
	if !p.track(u) {
		u.Close()
		return
	}
	defer p.untrack(u)
	defer u.Close()
	done := make(chan struct{}, 2)
	go func() { p.copy(u, c, true); done <- struct{}{} }()
	go func() { p.copy(c, u, false); done <- struct{}{} }()
	<-done
	// One side ended: end the other too (no half-open links).
	reset(c)
	reset(u)
	<-done
}

// copy moves bytes from src to dst, holding each chunk while stalled; up:
// from the instance to the upstream.
func (p *Proxy) copy(dst, src net.Conn, up bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.gate() {
				return
			}
			if up {
				// Before the write: its answer must find the link stalled.
				p.sent(buf[:n])
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // io.EOF included: the link ends as a whole
			return
		}
	}
}
