package pool

import (
	"cmp"
	"slices"
	"time"
)

// SubStats is one sub-pool (one Key) as the admin API shows it: who its
// connections are logged in as, and how many are in each state.
type SubStats struct {
	User, Database, App string
	Login               int
	Active              int
	Resetting           int
	Idle                int
	// OldestIdle is how long its longest-idle connection has been idle (0:
	// none idle).
	OldestIdle time.Duration
}

// SubPools lists the pool's sub-pools, sorted by user, database, app.
func (p *Pool) SubPools() []SubStats {
	now := p.clk.Now()
	p.mu.Lock()
	out := make([]SubStats, 0, len(p.subs))
	for k, sp := range p.subs {
		s := SubStats{User: k.User, Database: k.Database, App: k.App,
			Login: sp.lists[StateLogin].n, Active: sp.lists[StateActive].n,
			Resetting: sp.lists[StateResetting].n, Idle: sp.lists[StateIdle].n}
		if c := sp.lists[StateIdle].tail; c != nil {
			s.OldestIdle = now.Sub(c.idle)
		}
		out = append(out, s)
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b SubStats) int {
		return cmp.Or(cmp.Compare(a.User, b.User), cmp.Compare(a.Database, b.Database), cmp.Compare(a.App, b.App))
	})
	return out
}

// Drain closes every idle connection now (min_idle notwithstanding) and
// gives their slots back; connections in use are not touched and go back
// to the pool as usual. It returns how many it closed. The admin API's
// POST /admin/buckets/{id}/drain, after a backend failover: the idle
// connections still point at the old primary.
func (p *Pool) Drain() int {
	n := 0
	p.shed(ReasonDrained, func(Settings, int, *Conn, time.Time) bool { n++; return true })
	return n
}
