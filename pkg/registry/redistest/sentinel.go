package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// DefaultMasterSet is the master set name StartSentinel monitors.
const DefaultMasterSet = "tdsgate"

// SentinelOptions configure StartSentinel.
type SentinelOptions struct {
	// MasterSet names the monitored primary. Default DefaultMasterSet.
	MasterSet string
	// Replicas is the number of replicas. Default 1.
	Replicas int
	// Sentinels is the number of redis-sentinel processes. Default 3; the
	// quorum is a majority of them.
	Sentinels int
	// DownAfter is down-after-milliseconds: how long the primary must be
	// unreachable before the sentinels fail over. Default 1 s.
	DownAfter time.Duration
	// FailoverTimeout is failover-timeout. Default 5 s.
	FailoverTimeout time.Duration
	// Password protects the primary and the replicas (requirepass and
	// masterauth; the sentinels get auth-pass). TLS is not supported here.
	Password string
}

// Sentinel is a primary, its replicas and the sentinels that watch them,
// all owned by a test. Which data server is the primary changes with a
// failover: ask Master.
type Sentinel struct {
	t         testing.TB
	MasterSet string
	// Data are the data servers: Data[0] was started as the primary, the
	// rest as its replicas.
	Data []*Server
	// Sentinels are the redis-sentinel processes.
	Sentinels []*Server
	opt       SentinelOptions
}

// StartSentinel runs a primary, o.Replicas replicas and o.Sentinels
// sentinels on free loopback ports, waits until the sentinels know the
// replicas and each other (so a failover can run at once), and stops them
// all at cleanup.
func StartSentinel(t testing.TB, o SentinelOptions) *Sentinel {
	t.Helper()
	if o.MasterSet == "" {
		o.MasterSet = DefaultMasterSet
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Sentinels == 0 {
		o.Sentinels = 3
	}
	if o.DownAfter == 0 {
		o.DownAfter = time.Second
	}
	if o.FailoverTimeout == 0 {
		o.FailoverTimeout = 5 * time.Second
	}
	sn := &Sentinel{t: t, MasterSet: o.MasterSet, opt: o}
	primary := StartWith(t, Options{Password: o.Password})
	sn.Data = append(sn.Data, primary)
	for i := 0; i < o.Replicas; i++ {
		sn.Data = append(sn.Data, StartWith(t, Options{Password: o.Password, ReplicaOf: primary.Addr()}))
	}
	dir := t.TempDir()
	quorum := o.Sentinels/2 + 1
	for i := 0; i < o.Sentinels; i++ {
		conf := filepath.Join(dir, fmt.Sprintf("sentinel-%d.conf", i))
		lines := []string{
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", o.MasterSet, primary.Port(), quorum),
			fmt.Sprintf("sentinel down-after-milliseconds %s %d", o.MasterSet, o.DownAfter.Milliseconds()),
			fmt.Sprintf("sentinel failover-timeout %s %d", o.MasterSet, o.FailoverTimeout.Milliseconds()),
			fmt.Sprintf("sentinel parallel-syncs %s 1", o.MasterSet),
		}
		if o.Password != "" {
			lines = append(lines, fmt.Sprintf("sentinel auth-pass %s %s", o.MasterSet, o.Password))
		}
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := &Server{t: t, port: freePort(t), sentinelConf: conf}
		s.start()
		t.Cleanup(s.Kill)
		sn.Sentinels = append(sn.Sentinels, s)
	}
	sn.waitReady(30 * time.Second)
	return sn
}

// Addrs are the sentinels' host:port addresses (redis.sentinel.addrs).
func (sn *Sentinel) Addrs() []string {
	a := make([]string, len(sn.Sentinels))
	for i, s := range sn.Sentinels {
		a[i] = s.Addr()
	}
	return a
}

// Master is the primary's address as the first sentinel that answers
// reports it.
func (sn *Sentinel) Master() string {
	sn.t.Helper()
	for _, s := range sn.Sentinels {
		if !s.Running() {
			continue
		}
		r, err := sentinelCmd(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", sn.MasterSet)
		if err != nil || len(r) != 2 {
			continue
		}
		return net.JoinHostPort(r[0], r[1])
	}
	sn.t.Fatal("redistest: no sentinel answers GET-MASTER-ADDR-BY-NAME")
	return ""
}

// Primary is the data server that is the primary now (per the sentinels).
func (sn *Sentinel) Primary() *Server {
	sn.t.Helper()
	m := sn.Master()
	for _, d := range sn.Data {
		if d.Addr() == m {
			return d
		}
	}
	sn.t.Fatalf("redistest: master %s is none of the data servers", m)
	return nil
}

// Failover asks a sentinel for a failover (SENTINEL FAILOVER, no
// agreement needed) and waits until every running sentinel reports a new
// primary that says role:master. It returns the new primary's address.
func (sn *Sentinel) Failover() string {
	sn.t.Helper()
	old := sn.Master()
	var err error
	deadline := time.Now().Add(2 * sn.opt.FailoverTimeout)
	for time.Now().Before(deadline) {
		// NOGOODSLAVE/INPROG right after a previous failover: retry.
		if _, err = sentinelCmd(sn.Sentinels[0], "SENTINEL", "FAILOVER", sn.MasterSet); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		sn.t.Fatalf("redistest: SENTINEL FAILOVER: %v", err)
	}
	return sn.WaitNewMaster(old, 4*sn.opt.FailoverTimeout)
}

// KillPrimary kills the current primary (SIGKILL) and waits until the
// sentinels have promoted a replica; it returns the new primary's address
// and the killed server (Restart it to bring it back as a replica).
func (sn *Sentinel) KillPrimary() (string, *Server) {
	sn.t.Helper()
	p := sn.Primary()
	old := p.Addr()
	p.Kill()
	return sn.WaitNewMaster(old, sn.opt.DownAfter+4*sn.opt.FailoverTimeout), p
}

// WaitNewMaster waits until every running sentinel reports a primary other
// than old and that server answers role:master.
func (sn *Sentinel) WaitNewMaster(old string, d time.Duration) string {
	sn.t.Helper()
	deadline := time.Now().Add(d)
	for {
		m, ok := sn.agreedMaster()
		if ok && m != old && sn.roleIs(m, "master") {
			return m
		}
		if time.Now().After(deadline) {
			sn.t.Fatalf("redistest: no new master (old %s, sentinels say %s) within %s", old, m, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// agreedMaster is the master every running sentinel reports, if they agree.
func (sn *Sentinel) agreedMaster() (string, bool) {
	m := ""
	for _, s := range sn.Sentinels {
		if !s.Running() {
			continue
		}
		r, err := sentinelCmd(s, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", sn.MasterSet)
		if err != nil || len(r) != 2 {
			return "", false
		}
		a := net.JoinHostPort(r[0], r[1])
		if m != "" && a != m {
			return a, false
		}
		m = a
	}
	return m, m != ""
}

func (sn *Sentinel) roleIs(addr, role string) bool {
	for _, d := range sn.Data {
		if d.Addr() != addr || !d.Running() {
			continue
		}
		r, err := sentinelCmd(d, "ROLE")
		return err == nil && len(r) > 0 && r[0] == role
	}
	return false
}

// waitReady waits until each sentinel knows every replica and the other
// sentinels, and every replica's link to the primary is up.
func (sn *Sentinel) waitReady(d time.Duration) {
	sn.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ready, why := true, ""
		for _, s := range sn.Sentinels {
			reps, err := sentinelArrayLen(s, "SENTINEL", "REPLICAS", sn.MasterSet)
			if err != nil || reps < len(sn.Data)-1 {
				ready, why = false, fmt.Sprintf("sentinel %s knows %d replicas (%v)", s.Addr(), reps, err)
				break
			}
			sens, err := sentinelArrayLen(s, "SENTINEL", "SENTINELS", sn.MasterSet)
			if err != nil || sens < len(sn.Sentinels)-1 {
				ready, why = false, fmt.Sprintf("sentinel %s knows %d other sentinels (%v)", s.Addr(), sens, err)
				break
			}
		}
		if ready {
			for _, r := range sn.Data[1:] {
				info, err := infoField(r, "replication", "master_link_status")
				if err != nil || info != "up" {
					ready, why = false, fmt.Sprintf("replica %s link %q (%v)", r.Addr(), info, err)
					break
				}
			}
		}
		if ready {
			return
		}
		if time.Now().After(deadline) {
			sn.t.Fatalf("redistest: sentinel setup not ready within %s: %s", d, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// oneShot runs one command on s with a fresh connection (no client-side
// state survives a failover), as redis-cli would.
func oneShot(s *Server, args ...string) (rueidis.RedisMessage, error) {
	opt := rueidis.ClientOption{
		InitAddress: []string{s.Addr()}, ForceSingleClient: true, DisableCache: true,
		Dialer: net.Dialer{Timeout: time.Second}, ConnWriteTimeout: time.Second,
		TLSConfig: s.tlsClientConfig(), DisableRetry: true,
	}
	if s.sentinelConf == "" {
		opt.Password = s.opt.Password
	}
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return rueidis.RedisMessage{}, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Do(ctx, c.B().Arbitrary(args...).Build()).ToMessage()
}

// sentinelCmd runs a command that answers an array and returns its
// string elements (nested arrays are skipped).
func sentinelCmd(s *Server, args ...string) ([]string, error) {
	r, err := oneShot(s, args...)
	if err != nil {
		return nil, err
	}
	if str, err := r.ToString(); err == nil {
		return []string{str}, nil
	}
	arr, err := r.ToArray()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(arr))
	for _, m := range arr {
		if str, err := m.ToString(); err == nil {
			out = append(out, str)
		} else if n, err := m.AsInt64(); err == nil {
			out = append(out, strconv.FormatInt(n, 10))
		}
	}
	return out, nil
}

func sentinelArrayLen(s *Server, args ...string) (int, error) {
	r, err := oneShot(s, args...)
	if err != nil {
		return 0, err
	}
	arr, err := r.ToArray()
	return len(arr), err
}

// infoField reads one field of INFO section.
func infoField(s *Server, section, field string) (string, error) {
	r, err := oneShot(s, "INFO", section)
	if err != nil {
		return "", err
	}
	txt, err := r.ToString()
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(txt, "\r\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("INFO %s has no %s", section, field)
}
