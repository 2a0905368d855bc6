package main

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

const queueLen1 = `proxy_queue_length{bucket="bucket-001"}`

func secs(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func minMax(ds []time.Duration) (time.Duration, time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	return slices.Min(ds), slices.Max(ds)
}

func showOutcomes(m map[string]int) string {
	keys := slices.Sorted(maps.Keys(m))
	var parts []string
	for _, k := range keys {
		name := k
		switch k {
		case "50004":
			name = "QUEUE TIMEOUT (50004)"
		case "50005":
			name = "CIRCUIT BREAKER (50005)"
		case "ok":
			name = "success"
		}
		parts = append(parts, fmt.Sprintf("%s: %d", name, m[k]))
	}
	return strings.Join(parts, ", ")
}

// saturate lowers bucket-001's max to n through Redis and takes all n
// slots with holders through HAProxy. cleanup closes the holders and
// restores the max.
func saturate(ctx context.Context, r *runner, n int) (cleanup func(), ok bool) {
	st := r.st
	restore, prev, err := st.setMax(ctx, n)
	if err != nil {
		r.fail("SET proxy:bucket:bucket-001:max %d: %v", n, err)
		return func() {}, false
	}
	r.info("SET proxy:bucket:bucket-001:max %d (was %d)", n, prev)
	if c, ok := st.waitIdle(10 * time.Second); !ok {
		r.fail("counts in Redis are %v before the holders, not 0", c)
	}
	cleanup = func() {
		if err := restore(); err != nil {
			r.fail("restoring max %d: %v", prev, err)
			return
		}
		if got, _ := st.redisInt("proxy:bucket:bucket-001:max"); got != prev {
			r.fail("max after restore is %d, want %d", got, prev)
		} else {
			r.info("max restored to %d", prev)
		}
	}
	h, err := holdN(ctx, st.tds, Passwords[0], n)
	if err != nil {
		r.fail("%d holders: %v", n, err)
		return cleanup, false
	}
	cleanup = func(restoreMax func()) func() {
		return func() { h.Close(); restoreMax() }
	}(cleanup)
	c, _ := st.counts()
	r.info("%d holders logged in; proxy:bucket:bucket-001:count = %d", h.Len(), c[0])
	if c[0] != n {
		r.fail("count in Redis is %d with %d holders", c[0], n)
		return cleanup, false
	}
	return cleanup, true
}

// phase4 is scripts/test_phase4.go: 10 concurrent connections, then 20
// holders for 10 s plus 5 extra logins that succeed through the queue.
func phase4(ctx context.Context, r *runner) {
	st := r.st
	// Test 1: 10 concurrent connections, each SELECT @id.
	var wg sync.WaitGroup
	var mu sync.Mutex
	good := 0
	var durs []time.Duration
	var errs []string
	for i := 1; i <= 10; i++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			t0 := time.Now()
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			s, err := login(cctx, st.tds, Passwords[0])
			var v any
			if err == nil {
				v, err = s.scalar(cctx, "SELECT @id", sql.Named("id", id))
				s.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			durs = append(durs, time.Since(t0))
			switch {
			case err != nil:
				errs = append(errs, err.Error())
			case fmt.Sprint(v) != fmt.Sprint(id):
				errs = append(errs, fmt.Sprintf("SELECT @id=%d returned %v", id, v))
			default:
				good++
			}
		}(i)
	}
	wg.Wait()
	lo, hi := minMax(durs)
	if good == 10 {
		r.ok("Teste de conexões concorrentes OK: 10/10 connections returned their @id (%s–%s each)", secs(lo), secs(hi))
	} else {
		r.fail("concurrent connections: %d/10 OK; errors: %v", good, errs)
	}

	// Test 2: 20 holders for 10 s; 5 extras that go through the queue.
	const holders, extras, hold = 20, 5, 10 * time.Second
	// The proxies release test 1's slots as its sessions end: wait for it.
	if c, ok := st.waitIdle(10 * time.Second); !ok {
		r.fail("counts in Redis are %v after test 1, not 0", c)
		return
	}
	maxv, _ := st.redisInt("proxy:bucket:bucket-001:max")
	tl := time.Now()
	h, err := holdN(ctx, st.tds, Passwords[0], holders)
	if err != nil {
		r.fail("%d holders: %v", holders, err)
		return
	}
	defer h.Close()
	t0 := time.Now() // the holders hold from here
	c, _ := st.counts()
	r.info("%d holders logged in in %s; proxy:bucket:bucket-001:count = %d, max = %d", h.Len(), secs(t0.Sub(tl)), c[0], maxv)
	// The extras arrive shortly before the holders let go (a third of
	// queue_timeout, at most 1 s), so they wait in the queue and are
	// admitted as slots free, with time to spare on a loaded machine.
	lead := min(r.queueTimeout/3, time.Second)
	time.Sleep(time.Until(t0.Add(hold - lead)))
	res := make([]attempt, extras)
	var ewg sync.WaitGroup
	for i := 0; i < extras; i++ {
		ewg.Add(1)
		go func(i int) {
			defer ewg.Done()
			actx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			res[i] = timedLogin(actx, st.tds, Passwords[0])
		}(i)
		time.Sleep(100 * time.Millisecond) // one at a time through HAProxy's round robin
	}
	queued := 0
	waitFor(lead, func() bool {
		queued = 0
		for _, m := range st.metrics {
			v, _ := metric(m, queueLen1)
			queued += int(v)
		}
		return queued == extras
	})
	r.info("%d extra logins waiting in the proxies' queues (proxy_queue_length)", queued)
	time.Sleep(time.Until(t0.Add(hold)))
	h.Close()
	ewg.Wait()
	okN := 0
	var waits []time.Duration
	out := map[string]int{}
	for _, a := range res {
		out[outcome(a.err)]++
		if a.err == nil {
			okN++
			waits = append(waits, a.elapsed)
		}
	}
	lo, hi = minMax(waits)
	switch {
	case c[0] != holders:
		r.fail("saturation: count in Redis was %d with %d holders", c[0], holders)
	case okN != extras:
		r.fail("saturation and queue: %d/%d extras succeeded (%s)", okN, extras, showOutcomes(out))
	case queued == 0:
		r.fail("saturation and queue: the extras succeeded (%s–%s) but none was seen in a queue", secs(lo), secs(hi))
	default:
		r.ok("Teste de saturação e fila OK: %d holders (count %d/%d in Redis) for %s; %d/%d extras waited in the queue and succeeded in %s–%s",
			holders, c[0], maxv, hold, okN, extras, secs(lo), secs(hi))
	}
}

// queueTimeout is scripts/test_phase4_timeout.go.
func queueTimeout(ctx context.Context, r *runner) {
	cleanup, ok := saturate(ctx, r, 3)
	defer cleanup()
	if !ok {
		return
	}
	actx, cancel := context.WithTimeout(ctx, r.queueTimeout+20*time.Second)
	defer cancel()
	a := timedLogin(actx, r.st.tds, Passwords[0])
	n := errNumber(a.err)
	lo, hi := r.queueTimeout-300*time.Millisecond, r.queueTimeout+3*time.Second
	switch {
	case n != 50004:
		r.fail("the extra login: %v after %s, want TDS error 50004", a.err, secs(a.elapsed))
	case a.elapsed < lo || a.elapsed > hi:
		r.fail("50004 after %s; queue_timeout is %s", secs(a.elapsed), r.queueTimeout)
	default:
		r.ok("TDS Error 50004 (Queue Timeout) recebido corretamente! after %s (queue_timeout %s): %q",
			secs(a.elapsed), r.queueTimeout, firstLine(a.err))
	}
}

func firstLine(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// circuitBreaker is scripts/test_phase4_circuit_breaker.go: max 3, three
// holders, two logins fill proxy-1's queue (max_queue_size 2), the sixth
// is refused at once with 50005. The queued and the sixth go to proxy-1
// directly: HAProxy would spread them over three queues.
func circuitBreaker(ctx context.Context, r *runner) {
	st := r.st
	cleanup, ok := saturate(ctx, r, 3)
	defer cleanup()
	if !ok {
		return
	}
	queued := make([]attempt, 2)
	var wg sync.WaitGroup
	for i := range queued {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			actx, cancel := context.WithTimeout(ctx, r.queueTimeout+20*time.Second)
			defer cancel()
			queued[i] = timedLogin(actx, st.direct[0], Passwords[0])
		}(i)
	}
	var q float64
	waitFor(2*time.Second, func() bool { q, _ = metric(st.metrics[0], queueLen1); return q == 2 })
	r.info("proxy-1 (%s): %s = %.0f", st.direct[0], queueLen1, q)
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	a := timedLogin(actx, st.direct[0], Passwords[0])
	cancel()
	wg.Wait()
	var qo []string
	for _, x := range queued {
		qo = append(qo, fmt.Sprintf("%s after %s", outcome(x.err), secs(x.elapsed)))
	}
	r.info("the two queued logins: %s", strings.Join(qo, "; "))
	switch n := errNumber(a.err); {
	case q != 2:
		r.fail("proxy-1's queue held %.0f logins, want 2", q)
	case n != 50005:
		r.fail("the 6th login: %v after %s, want 50005", a.err, secs(a.elapsed))
	case a.elapsed >= 5*time.Second:
		r.fail("50005 after %s: not a fast rejection", secs(a.elapsed))
	default:
		r.ok("TDS Error 50005 (Queue Full / Circuit Breaker) recebido! rejected in %s: %q", secs(a.elapsed), firstLine(a.err))
	}
}

// cbDirect is scripts/test_phase4_cb_direct.go: 10 extra logins in
// parallel through HAProxy against a saturated bucket.
func cbDirect(ctx context.Context, r *runner) {
	st := r.st
	cleanup, ok := saturate(ctx, r, 3)
	defer cleanup()
	if !ok {
		return
	}
	const extras = 10
	res := make([]attempt, extras)
	var wg sync.WaitGroup
	for i := 0; i < extras; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			actx, cancel := context.WithTimeout(ctx, r.queueTimeout+20*time.Second)
			defer cancel()
			res[i] = timedLogin(actx, st.tds, Passwords[0])
		}(i)
	}
	wg.Wait()
	out := map[string]int{}
	var fast []time.Duration
	for _, a := range res {
		out[outcome(a.err)]++
		if errNumber(a.err) == 50005 {
			fast = append(fast, a.elapsed)
		}
	}
	other := extras - out["ok"] - out["50004"] - out["50005"]
	_, slowest := minMax(fast)
	switch {
	case out["50005"] == 0:
		r.fail("no CIRCUIT BREAKER (50005) among %d extras: %s", extras, showOutcomes(out))
	case other > 0:
		r.fail("unexpected outcomes among %d extras: %s", extras, showOutcomes(out))
	default:
		r.ok("%d extras through HAProxy: %s (each 50005 within %s)", extras, showOutcomes(out), secs(slowest))
	}
}

// errorsScenario is scripts/test_phase4_errors.go: a saturated bucket
// answers the extra login with 50004 or 50005. A login no route matches
// gets 50001.
func errorsScenario(ctx context.Context, r *runner) {
	st := r.st
	cleanup, ok := saturate(ctx, r, 3)
	defer cleanup()
	if !ok {
		return
	}
	actx, cancel := context.WithTimeout(ctx, r.queueTimeout+20*time.Second)
	a := timedLogin(actx, st.tds, Passwords[0])
	cancel()
	if n := errNumber(a.err); n == 50004 || n == 50005 {
		r.ok("Teste de Queue Timeout concluído: the extra login got %d after %s", n, secs(a.elapsed))
	} else {
		r.fail("the extra login: %v after %s, want 50004 or 50005", a.err, secs(a.elapsed))
	}
	actx, cancel = context.WithTimeout(ctx, 10*time.Second)
	b := timedLogin(actx, st.tds, "not-a-runbook-password")
	cancel()
	if n := errNumber(b.err); n == 50001 {
		r.ok("a password no route matches gets 50001 in %s: %q", secs(b.elapsed), firstLine(b.err))
	} else {
		r.fail("a password no route matches: %v, want 50001", b.err)
	}
}

// killProxy is runbook 19.1, with SIGKILL so that Redis's TTL path is the
// one tested (a SIGTERMed proxy leaves proxy:instances at once).
func killProxy(ctx context.Context, r *runner) {
	st := r.st
	const victim, vi = "proxy-2", 1
	if m, _ := st.members(); !slices.Contains(m, victim) {
		r.fail("%s is not in proxy:instances before the test: %v", victim, m)
		return
	}
	l := startLoop(ctx, st.tds, 2, 50*time.Millisecond)
	time.Sleep(time.Second)
	tKill := time.Now()
	if err := st.Kill(victim); err != nil {
		l.Stop()
		r.fail("kill %s: %v", victim, err)
		return
	}
	tDead := time.Now()
	r.info("%s killed (SIGKILL)", victim)
	var hs map[string]string
	down := waitFor(10*time.Second, func() bool { hs, _ = st.haproxyStatus(); return hs[victim] != "UP" })
	tDown := time.Since(tKill)
	r.info("HAProxy marks %s %s after %s", victim, hs[victim], secs(tDown))
	l1, l3 := live(st.health[0]), live(st.health[2])
	login1, err1 := oneShot(ctx, st.tds, Passwords[0], "SELECT 1")
	var m []string
	reaped := waitFor(r.heartbeatTTL+15*time.Second, func() bool { m, _ = st.members(); return !slices.Contains(m, victim) })
	tReap := time.Since(tKill)
	r.info("proxy:instances = %v after %s (heartbeat TTL %s)", m, secs(tReap), r.heartbeatTTL)
	if err := st.Start(victim); err != nil {
		l.Stop()
		r.fail("start %s: %v", victim, err)
		return
	}
	back := waitFor(20*time.Second, func() bool {
		hs, _ = st.haproxyStatus()
		m, _ = st.members()
		return live(st.health[vi]) && hs[victim] == "UP" && slices.Contains(m, victim)
	})
	tBack := time.Since(tKill)
	time.Sleep(500 * time.Millisecond)
	as := l.Stop()
	okN, failed := count(as)
	var after, during []attempt
	for _, a := range failed {
		if a.start.After(tDead) {
			after = append(after, a)
		} else {
			during = append(during, a)
		}
	}
	r.info("login loop through HAProxy: %d ok, %d failed (%d in flight on %s when it was killed)", okN, len(failed), len(during), victim)
	switch {
	case !down:
		r.fail("HAProxy still has %s UP 10s after the kill", victim)
	case !l1 || !l3:
		r.fail("/health/live of proxy-1 %v, proxy-3 %v after the kill", l1, l3)
	case err1 != nil || fmt.Sprint(login1) != "1":
		r.fail("login via %s with %s down: %v", st.tds, victim, err1)
	case len(after) > 0:
		r.fail("%d logins started after the kill failed, first: %v", len(after), after[0].err)
	case !reaped:
		r.fail("%s still in proxy:instances %s after the kill", victim, secs(tReap))
	case !back:
		r.fail("%s did not rejoin (live, HAProxy UP, proxy:instances) within 20s of its start", victim)
	default:
		r.ok("%s killed: HAProxy DOWN after %s, logins via %s kept working (%d ok, 0 failed after the kill), reaped from proxy:instances after %s; restarted, back in proxy:instances and UP after %s",
			victim, secs(tDown), st.tds, okN, secs(tReap), secs(tBack))
	}
}

// killRedis is runbook 19.2. Two sessions stay open across the Redis
// restart: after the reconcile the count in Redis is 2, then 0.
func killRedis(ctx context.Context, r *runner) {
	st := r.st
	h, err := holdN(ctx, st.tds, Passwords[0], 2)
	if err != nil {
		r.fail("2 holders: %v", err)
		return
	}
	defer h.Close()
	tStop := time.Now()
	if err := st.Stop("redis"); err != nil {
		r.fail("stop redis: %v", err)
		return
	}
	r.info("redis stopped")
	var statuses []string
	degraded := waitFor(15*time.Second, func() bool {
		statuses = statuses[:0]
		all := true
		for _, a := range st.health {
			_, rep, err := getHealth(a)
			if err != nil {
				statuses = append(statuses, err.Error())
				all = false
				continue
			}
			statuses = append(statuses, rep.Status+" (redis "+rep.component("redis")+")")
			all = all && rep.Status == "degraded" && rep.component("redis") == "unhealthy"
		}
		return all
	})
	r.info("/health after %s: %s", secs(time.Since(tStop)), strings.Join(statuses, ", "))
	var fb []string
	fallback := waitFor(10*time.Second, func() bool {
		fb = fb[:0]
		all := true
		for _, p := range proxies {
			n, _, err := st.grepLogs(p, tStop, "fallback")
			fb = append(fb, fmt.Sprintf("%s %d", p, n))
			all = all && err == nil && n > 0
		}
		return all
	})
	r.info("log lines matching 'fallback' since the stop: %s", strings.Join(fb, ", "))
	v, ferr := oneShot(ctx, st.tds, Passwords[0], "SELECT 'fallback mode works' AS result")
	r.info("login via %s in fallback: %v %v", st.tds, v, ferr)

	tStart := time.Now()
	if err := st.Start("redis"); err != nil {
		r.fail("start redis: %v", err)
		return
	}
	var m []string
	healthy := waitFor(20*time.Second, func() bool {
		for _, a := range st.health {
			if _, rep, err := getHealth(a); err != nil || rep.Status != "healthy" {
				return false
			}
		}
		m, _ = st.members()
		return len(m) == 3
	})
	tHealthy := time.Since(tStart)
	var rc []string
	reconciled := waitFor(10*time.Second, func() bool {
		rc = rc[:0]
		all := true
		for _, p := range proxies {
			n, _, err := st.grepLogs(p, tStart, "reconcil")
			rc = append(rc, fmt.Sprintf("%s %d", p, n))
			all = all && err == nil && n > 0
		}
		return all
	})
	r.info("redis restarted (empty); log lines matching 'reconcil': %s; all healthy, proxy:instances %v after %s", strings.Join(rc, ", "), m, secs(tHealthy))
	var c [3]int
	held := waitFor(10*time.Second, func() bool { c, _ = st.counts(); return c[0] == 2 })
	h.Close()
	c2, idle := st.waitIdle(10 * time.Second)
	r.info("proxy:bucket:bucket-001:count = %d with 2 sessions open, %d after they closed", c[0], c2[0])
	switch {
	case !degraded:
		r.fail("the proxies' /health did not turn degraded with Redis down: %s", strings.Join(statuses, ", "))
	case !fallback:
		r.fail("not every proxy logged 'fallback': %s", strings.Join(fb, ", "))
	case ferr != nil:
		r.fail("a login in fallback mode failed: %v", ferr)
	case !healthy:
		r.fail("after Redis came back: not every proxy healthy and registered (proxy:instances %v)", m)
	case !reconciled:
		r.fail("not every proxy logged 'reconcil': %s", strings.Join(rc, ", "))
	case !held || !idle:
		r.fail("counts after the reconcile: %d with 2 sessions open (want 2), %v when idle (want 0)", c[0], c2)
	default:
		r.ok("Redis down: every proxy degraded and in fallback (logs), logins still served; Redis back: reconciled in %s, count %d = open sessions, 0 when idle",
			secs(tHealthy), c[0])
	}
}

// killBucket is runbook 19.3.
func killBucket(ctx context.Context, r *runner) {
	st := r.st
	if err := st.Stop("bucket-1"); err != nil {
		r.fail("stop bucket-1: %v", err)
		return
	}
	tStop := time.Now()
	r.info("sqlserver-bucket-1 stopped")
	var comp string
	unhealthy := waitFor(15*time.Second, func() bool {
		_, rep, err := getHealth(st.health[0])
		comp = rep.component("sqlserver-bucket-001")
		return err == nil && comp == "unhealthy"
	})
	r.info("/health of proxy-1: sqlserver-bucket-001 %s after %s", comp, secs(time.Since(tStop)))
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	a := timedLogin(actx, st.tds, Passwords[0])
	cancel()
	r.info("bucket-1 login: %s after %s: %s", outcome(a.err), secs(a.elapsed), firstLine(a.err))
	v2, err2 := oneShot(ctx, st.tds, Passwords[1], "SELECT 'bucket-2 ok' AS result")
	v3, err3 := oneShot(ctx, st.tds, Passwords[2], "SELECT 'bucket-3 ok' AS result")
	r.info("bucket-2: %v %v; bucket-3: %v %v", v2, err2, v3, err3)
	if err := st.Start("bucket-1"); err != nil {
		r.fail("start bucket-1: %v", err)
		return
	}
	tStart := time.Now()
	var back error
	recovered := waitFor(20*time.Second, func() bool {
		_, rep, err := getHealth(st.health[0])
		if err != nil || rep.component("sqlserver-bucket-001") != "healthy" {
			return false
		}
		_, back = oneShot(ctx, st.tds, Passwords[0], "SELECT 1")
		return back == nil
	})
	switch {
	case !unhealthy:
		r.fail("/health never showed sqlserver-bucket-001 unhealthy (last %q)", comp)
	case errNumber(a.err) != 50002:
		r.fail("a bucket-1 login with its SQL Server down: %v, want 50002", a.err)
	case err2 != nil || err3 != nil:
		r.fail("other buckets with bucket-1 down: %v / %v", err2, err3)
	case !recovered:
		r.fail("bucket-1 did not recover within 20s of its start: %v", back)
	default:
		r.ok("bucket-1 down: /health unhealthy, its login refused with 50002 in %s, bucket-2 and bucket-3 fine; restarted: healthy and serving after %s",
			secs(a.elapsed), secs(time.Since(tStart)))
	}
}

// rollingRestart is runbook 19.4: each proxy in turn gets SIGTERM, exits,
// starts again and is UP in HAProxy before the next; a client loop logs in
// through HAProxy all along and must see no failure.
func rollingRestart(ctx context.Context, r *runner) {
	st := r.st
	l := startLoop(ctx, st.tds, 4, 10*time.Millisecond)
	time.Sleep(time.Second)
	for i, p := range proxies {
		t0 := time.Now()
		if err := st.Stop(p); err != nil {
			l.Stop()
			r.fail("stop %s: %v", p, err)
			return
		}
		tStopped := time.Since(t0)
		if err := st.Start(p); err != nil {
			l.Stop()
			r.fail("start %s: %v", p, err)
			return
		}
		var hs map[string]string
		up := waitFor(20*time.Second, func() bool { hs, _ = st.haproxyStatus(); return live(st.health[i]) && hs[p] == "UP" })
		if !up {
			l.Stop()
			r.fail("%s not UP in HAProxy 20s after its start (%v)", p, hs)
			return
		}
		r.info("%s: SIGTERM → exited in %s; started; UP in HAProxy %s after the SIGTERM", p, secs(tStopped), secs(time.Since(t0)))
	}
	time.Sleep(time.Second)
	as := l.Stop()
	okN, failed := count(as)
	if okN == 0 || len(failed) > 0 {
		var first []string
		for i, a := range failed {
			if i == 5 {
				break
			}
			first = append(first, fmt.Sprintf("%s: %v", a.start.Format("15:04:05.000"), firstLine(a.err)))
		}
		r.fail("%d logins ok, %d failed during the rolling restart: %s", okN, len(failed), strings.Join(first, "; "))
		return
	}
	r.ok("rolling restart of 3 proxies: %d logins through HAProxy, 0 failed", okN)
}

// logsScenario runs the runbook's filters (17.3) over proxy-1's log.
func logsScenario(ctx context.Context, r *runner) {
	filters := []struct{ name, re string }{
		{"session", "session"},
		{`acquire\|release`, "acquire|release"},
		{`error\|fail\|warn`, "error|fail|warn"},
		{"heartbeat", "heartbeat"},
		{"fallback", "fallback"},
		{"reconcil", "reconcil"},
		{`queue\|circuit`, "queue|circuit"},
	}
	var missing, found []string
	for _, f := range filters {
		n, first, err := r.st.grepLogs("proxy-1", time.Time{}, f.re)
		if err != nil {
			r.fail("reading proxy-1's log: %v", err)
			return
		}
		if n == 0 {
			missing = append(missing, f.name)
		} else {
			found = append(found, fmt.Sprintf("%s %d", f.name, n))
			r.debug("grep -i %q: %d lines, e.g. %s", f.name, n, first)
		}
	}
	r.info("proxy-1's log, lines per runbook filter: %s", strings.Join(found, ", "))
	if len(missing) > 0 {
		r.fail("no line for: %s (run the other scenarios first: fallback/reconcil come from kill-redis, queue from queue-timeout)", strings.Join(missing, ", "))
		return
	}
	r.ok("grep -i finds lines for each of the runbook's %d filters", len(filters))
}
