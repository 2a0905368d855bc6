package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Whole-machine profiles. pprof sees one Go process; a bulk stream's
// MB/s is set by every process on it sharing the machine's cores. So the
// raw client's bulk runs in plain mode also get a perf record of every
// CPU (cpu-clock, which samples idle CPUs too: the swapper), enabled
// for exactly the transfer through perf's control descriptors, and the
// report splits the cores between the path's processes, the stand-in,
// the client, the kernel's threads and idle.

// PerfMachine is one whole-machine profile: each command's share of
// every CPU's samples, and the heaviest symbols.
type PerfMachine struct {
	Comms []CommShare
	// Roles maps a command to what it is on the stream: "path",
	// "stand-in", "client" or "idle"; others are kernel threads or
	// the rest of the machine.
	Roles map[string]string
	// Top is the head of `perf report --sort comm,dso,sym`.
	Top string
}

// CommShare is a command's share of all samples, in percent of every
// CPU's time.
type CommShare struct {
	Comm string
	Pct  float64
}

// perfRun is a perf record of every CPU, started with its events off.
type perfRun struct {
	cmd      *exec.Cmd
	ctl, ack *os.File // ours: commands to perf, perf's acks
	file     string
	roles    map[string]string
}

// startPerf starts perf record for key with its events disabled, or
// returns nil (and notes why once) when perf cannot run.
func (e *env) startPerf(ctx context.Context, key string, roles map[string]string) *perfRun {
	if e.opts.NoProfiles || e.perfNote != "" {
		return nil
	}
	bin, err := exec.LookPath("perf")
	if err != nil {
		e.perfNote = "perf is not installed (apt-get install linux-perf): no whole-machine profiles in this run"
		e.opts.logf("%s", e.perfNote)
		return nil
	}
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil
	}
	ackR, ackW, err := os.Pipe()
	if err != nil {
		ctlR.Close()
		ctlW.Close()
		return nil
	}
	file := e.profileFile("perf-", key, ".data")
	cmd := exec.CommandContext(ctx, bin, "record", "-a", "-e", "cpu-clock", "-F", "999", "--no-buildid", "-q",
		"-D", "-1", "--control", "fd:3,4", "-o", file)
	cmd.ExtraFiles = []*os.File{ctlR, ackW}
	err = cmd.Start()
	ctlR.Close()
	ackW.Close()
	if err != nil {
		ctlW.Close()
		ackR.Close()
		e.perfNote = fmt.Sprintf("perf record did not start (%v): no whole-machine profiles in this run", err)
		e.opts.logf("%s", e.perfNote)
		return nil
	}
	return &perfRun{cmd: cmd, ctl: ctlW, ack: ackR, file: file, roles: roles}
}

// command sends perf a control command and waits for its ack.
func (p *perfRun) command(c string) error {
	if p == nil {
		return nil
	}
	if _, err := p.ctl.WriteString(c + "\n"); err != nil {
		return err
	}
	p.ack.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 4)
	if _, err := p.ack.Read(b); err != nil {
		return fmt.Errorf("perf %s: no ack: %w", c, err)
	}
	return nil
}

// finish stops perf and reads its profile.
func (p *perfRun) finish(ctx context.Context) (PerfMachine, error) {
	// The descriptors stay open until perf has written its file: a
	// closed ack pipe would kill it with SIGPIPE before its header.
	p.cmd.Process.Signal(syscall.SIGINT)
	werr := p.cmd.Wait()
	p.ctl.Close()
	p.ack.Close()
	var m PerfMachine
	if _, err := os.Stat(p.file); err != nil {
		return m, errors.Join(werr, err)
	}
	out, err := exec.CommandContext(ctx, "perf", "report", "-i", p.file, "--sort", "comm", "--stdio", "-q").Output()
	if err != nil {
		return m, fmt.Errorf("perf report: %w", err)
	}
	m.Comms = parseCommShares(string(out))
	m.Roles = p.roles
	top, err := exec.CommandContext(ctx, "perf", "report", "-i", p.file, "--sort", "comm,dso,sym", "--stdio", "-q", "--percent-limit", "1").Output()
	if err == nil {
		lines := strings.Split(strings.TrimRight(string(top), "\n"), "\n")
		m.Top = strings.Join(lines[:min(len(lines), 16)], "\n")
	}
	return m, nil
}

// parseCommShares reads `perf report --sort comm --stdio -q` lines:
// "    45.15%  proxy".
func parseCommShares(out string) []CommShare {
	var cs []CommShare
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || !strings.HasSuffix(f[0], "%") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
		if err != nil {
			continue
		}
		cs = append(cs, CommShare{Comm: strings.Join(f[1:], " "), Pct: v})
	}
	return cs
}

// procComm is a process's command name (/proc/<pid>/comm), as perf
// names its samples.
func procComm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// perfRoles names the commands of t's stream for its whole-machine
// profile.
func (e *env) perfRoles(t *Target) map[string]string {
	roles := map[string]string{"swapper": "idle"}
	for _, pid := range t.PIDs {
		if c := procComm(pid); c != "" {
			roles[c] = "path"
		}
	}
	if c := procComm(e.standin.pid()); c != "" {
		roles[c] = "stand-in"
	}
	if c := procComm(os.Getpid()); c != "" {
		roles[c] = "client"
	}
	return roles
}

// split adds up the shares by role, in cores: "path", "stand-in",
// "client", "kernel" (kernel threads: kworker, ksoftirqd, ...), "idle"
// and "other".
func (m *PerfMachine) split(cores int) map[string]float64 {
	s := map[string]float64{}
	for _, c := range m.Comms {
		role := m.Roles[c.Comm]
		if role == "" {
			role = "other"
			if isKernelThread(c.Comm) {
				role = "kernel"
			}
		}
		s[role] += c.Pct / 100 * float64(cores)
	}
	return s
}

func isKernelThread(comm string) bool {
	for _, p := range []string{"kworker", "ksoftirqd", "rcu", "migration", "kthreadd", "kcompactd", "kdamond", "khugepaged", "kswapd", "irq/", "cpuhp", "watchdog", "jbd2", "psimon"} {
		if strings.HasPrefix(comm, p) {
			return true
		}
	}
	return false
}
