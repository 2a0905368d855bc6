package pool

import (
	"github.com/tdsgate/tdsgate/pkg/backend"
	"github.com/tdsgate/tdsgate/pkg/limiter"
)

// ModeTransaction: a backend connection serves one request (or one
// transaction, or a pinned session) at a time; client sessions borrow one
// for each request and give it back at the end of the answer. See the
// package documentation, "Transaction pooling".
const ModeTransaction Mode = "transaction"

// Waiter is a client session of a transaction-mode sub-pool waiting for
// one of its connections (Lend hands a returning connection straight to
// the oldest waiter of its key).
type Waiter struct {
	// C receives the connection handed over (buffered: Lend never blocks).
	C    chan *Conn
	sub  *subPool
	done bool
}

// LoginAnswer returns the answer to the login that the sub-pool of key
// gives a client whose password verifies against its credential (the
// backend's answer to the first login it accepted), or nil: then the
// client logs in at the backend, which decides.
func (p *Pool) LoginAnswer(key Key, password string) *backend.LoginResult {
	p.mu.Lock()
	sp := p.subs[key]
	if p.closed || sp == nil || sp.cred == nil || sp.login == nil {
		p.mu.Unlock()
		return nil
	}
	cred, login := sp.cred, sp.login
	p.mu.Unlock()
	if !cred.verify(password) {
		return nil
	}
	return login
}

// Open registers a connection of a transaction-mode session that the
// backend is about to log in (Begin, then Activate); Adopt then makes the
// login's answer the sub-pool's, once the backend accepted it.
func (p *Pool) Open(key Key, t limiter.Ticket, owner uint64) *Conn {
	c := p.Begin(key, t)
	c.Owner = owner
	return c
}

// Adopt records, after Activate, that the backend accepted c's login with
// password: the password becomes the sub-pool's credential and the answer
// its login answer (LoginAnswer). It reports false when the login cannot
// be shared (an empty password).
func (c *Conn) Adopt(password string) bool {
	c.Accept(password)
	if c.cred == nil {
		return false
	}
	c.pool.mu.Lock()
	if c.sub.cred == c.cred && c.sub.login == nil {
		c.sub.login = c.Login
	}
	c.pool.mu.Unlock()
	return true
}

// Borrow takes an idle connection of key for owner: idle → active. It
// returns nil when there is none (those past max_lifetime, or closed by
// the server, are closed on the way).
func (p *Pool) Borrow(key Key, owner uint64) *Conn {
	for {
		p.mu.Lock()
		sp := p.subs[key]
		if p.closed || sp == nil || sp.lists[StateIdle].n == 0 {
			p.mu.Unlock()
			return nil
		}
		c := sp.lists[StateIdle].head
		if p.takeIdleLocked(c) {
			if c.Owner != owner {
				c.Reused++
			}
			return c
		}
	}
}

// Wait registers a waiter for a connection of key. The caller must call
// Leave when it stops waiting, and use a connection Leave returns.
func (p *Pool) Wait(key Key) *Waiter {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := &Waiter{C: make(chan *Conn, 1), sub: p.sub(key)}
	w.sub.waiters = append(w.sub.waiters, w)
	return w
}

// Leave stops w's wait. It returns the connection handed to w meanwhile,
// if any: the caller owns it (active).
func (p *Pool) Leave(w *Waiter) *Conn {
	p.mu.Lock()
	if !w.done {
		w.done = true
		for i, x := range w.sub.waiters {
			if x == w {
				w.sub.waiters = append(w.sub.waiters[:i], w.sub.waiters[i+1:]...)
				break
			}
		}
		p.dropSubLocked(w.sub)
	}
	p.mu.Unlock()
	select {
	case c := <-w.C:
		return c
	default:
		return nil
	}
}

// Lend takes back a connection a transaction-mode session borrowed, at a
// message boundary with nothing owed and no transaction open: it goes to
// the oldest waiter of its key if there is one (staying active), else
// idle, or closed (pool closed, max_lifetime, max_idle, pressure). The
// next borrower that is not its owner resets it (RESETCONNECTION).
func (p *Pool) Lend(c *Conn) {
	p.mu.Lock()
	if c.state != StateActive {
		p.mu.Unlock()
		return
	}
	st := p.st
	if c.sub.cred != c.cred {
		p.mu.Unlock()
		p.Close(c, ReasonCredentialChanged)
		return
	}
	reason := ""
	switch {
	case p.closed:
		reason = ReasonClosed
	case p.clk.Now().Sub(c.created) >= st.MaxLifetime:
		reason = ReasonMaxLifetime
	}
	if reason == "" && len(c.sub.waiters) > 0 {
		w := c.sub.waiters[0]
		c.sub.waiters = c.sub.waiters[1:]
		w.done = true
		w.C <- c
		p.mu.Unlock()
		p.obs.Checkout(p.bucket, true)
		return
	}
	switch {
	case reason != "":
	case st.MaxIdle > 0 && p.idle >= st.MaxIdle:
		reason = ReasonMaxIdle
	case p.pressuredLocked() && p.idle >= st.MinIdle && p.waitingElsewhereLocked(c.sub):
		// Borrowers of another sub-pool wait for a slot: this one's
		// goes to them. (Waiters of its own were handed it above; with
		// none anywhere, idle connections of the bucket are shed by
		// Pressure itself, for the logins that wait.)
		reason = ReasonPressure
	}
	if reason == "" {
		c.idle = p.clk.Now()
		p.move(c, StateIdle)
	}
	n := p.idle
	p.mu.Unlock()
	if reason != "" {
		p.Close(c, reason)
		return
	}
	p.obs.Idle(p.bucket, n)
}

// Busy counts the connections of the pool lent out or logging in (active
// or login), for tests and metrics.
func (p *Pool) Busy() int {
	s := p.Stats()
	return s.Active + s.Login + s.Resetting
}

// waitingElsewhereLocked reports whether a sub-pool other than sp has
// borrowers waiting. Called with p.mu held.
func (p *Pool) waitingElsewhereLocked(sp *subPool) bool {
	for _, o := range p.subs {
		if o != sp && len(o.waiters) > 0 {
			return true
		}
	}
	return false
}
