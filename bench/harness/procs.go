package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports.
const clockTicks = 100

// proc is a child process the harness started: a stand-in, a proxy, HAProxy,
// tdspool or redis-server. Its output goes to a log file in the work dir.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startProc starts bin with args, stdout and stderr to <dir>/<name>.log.
func startProc(dir, name string, env []string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// Own process group, so that a stop reaches nothing else, and no
	// signal from the terminal reaches it first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last lines of the process's log, for error messages.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitTCP waits until addr accepts a TCP connection, or the process exits.
func waitTCP(ctx context.Context, p *proc, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited before listening on %s: %v\n%s", p.name, addr, p.err, p.tail(20))
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			name := "process"
			if p != nil {
				name = p.name
			}
			return fmt.Errorf("%s: nothing listening on %s after %s: %v", name, addr, d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1, holding all
// of them open until the last is found so that none repeats.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// procStat is what the harness reads about a process from /proc.
type procStat struct {
	CPU time.Duration // user + system time of all threads
	// Wait is the time its threads spent runnable but waiting for a CPU
	// (schedstat's second field, added up): how much the rest of the
	// machine held it back.
	Wait time.Duration
	RSS  int64 // resident set size, bytes
	FDs  int   // open file descriptors
}

// readStat reads /proc/<pid>/stat (utime, stime), /proc/<pid>/status
// (VmRSS) and counts /proc/<pid>/fd.
func readStat(pid int) (procStat, error) {
	var s procStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields after it start past the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return s, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return s, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.CPU = time.Duration(ut+st) * time.Second / clockTicks
	if ns, wait, ok := schedCPU(pid); ok {
		s.CPU, s.Wait = ns, wait
	}
	sf, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	defer sf.Close()
	sc := bufio.NewScanner(sf)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			s.RSS = kb << 10
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.FDs = len(ents)
	return s, nil
}

// sumStats reads every pid and adds the figures up.
func sumStats(pids []int) (procStat, error) {
	var t procStat
	for _, pid := range pids {
		s, err := readStat(pid)
		if err != nil {
			return t, err
		}
		t.CPU += s.CPU
		t.RSS += s.RSS
		t.FDs += s.FDs
	}
	return t, nil
}

// raiseNoFile raises RLIMIT_NOFILE (soft and, as root, hard) to at least
// want, so that this process and the children it starts (they inherit
// it) can hold the idle-capacity sessions. It returns the soft limit in
// force afterwards.
func raiseNoFile(want uint64) uint64 {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0
	}
	if r.Cur >= want {
		return r.Cur
	}
	n := r
	n.Cur = want
	if n.Max < want {
		n.Max = want
	}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n) != nil {
		// Not root: as far as the hard limit goes.
		n = r
		n.Cur = r.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &n)
	}
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
	return r.Cur
}

// cmdOutput runs a command and returns its trimmed output, or "" on error.
func cmdOutput(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// netCounters are the kernel's TCP counters that explain latency outliers
// on loopback: a retransmitted SYN waits the 1 s initial RTO.
type netCounters struct {
	Retrans, ListenOverflows, ListenDrops int64
}

// readNet reads /proc/net/snmp (Tcp RetransSegs) and /proc/net/netstat
// (TcpExt ListenOverflows, ListenDrops). Missing counters read as 0.
func readNet() netCounters {
	var c netCounters
	get := func(path, prefix string, names map[string]*int64) {
		b, err := os.ReadFile(path)
		if err != nil {
			return
		}
		lines := strings.Split(string(b), "\n")
		for i := 0; i+1 < len(lines); i++ {
			if !strings.HasPrefix(lines[i], prefix) || !strings.HasPrefix(lines[i+1], prefix) {
				continue
			}
			keys, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			for j := range min(len(keys), len(vals)) {
				if p, ok := names[keys[j]]; ok {
					*p, _ = strconv.ParseInt(vals[j], 10, 64)
				}
			}
			return
		}
	}
	get("/proc/net/snmp", "Tcp:", map[string]*int64{"RetransSegs": &c.Retrans})
	get("/proc/net/netstat", "TcpExt:", map[string]*int64{"ListenOverflows": &c.ListenOverflows, "ListenDrops": &c.ListenDrops})
	return c
}

func (a netCounters) sub(b netCounters) netCounters {
	return netCounters{a.Retrans - b.Retrans, a.ListenOverflows - b.ListenOverflows, a.ListenDrops - b.ListenDrops}
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// schedCPU is the time the threads of pid have run, in nanoseconds: the
// first field of each /proc/<pid>/task/<tid>/schedstat, added up; and the
// time they waited on a run queue (the second field). The 10 ms ticks of
// /proc/<pid>/stat are too coarse for a transfer of a second or less (a
// tick is 0.04 s per GB of a 256 MB run). Threads that have exited are
// not counted; the proxies measured keep theirs.
func schedCPU(pid int) (run, wait time.Duration, ok bool) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, 0, false
	}
	var total, waited int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			return 0, 0, false
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, false
		}
		w, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total += ns
		waited += w
	}
	return time.Duration(total), time.Duration(waited), total > 0
}
