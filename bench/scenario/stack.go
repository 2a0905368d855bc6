package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// stack is how the runner reaches and drives the components.
type stack struct {
	tds     string   // HAProxy's TDS address
	direct  []string // one proxy each (proxy-1..3), through HAProxy's single-proxy ports
	redis   string
	health  []string // each proxy's health address
	metrics []string // each proxy's metrics address
	stats   string   // HAProxy stats address

	kind        string // "local" or "compose"
	script      string // local: deployments/local/stack.sh
	logDir      string // local: where proxy-N.log are
	composeFile string // compose: deployments/docker-compose.yml
}

// proxies are the component names of the three proxies, in order.
var proxies = []string{"proxy-1", "proxy-2", "proxy-3"}

// service maps a component name (bucket-1, redis, proxy-2, haproxy) to the
// compose service name.
func (s *stack) service(comp string) string {
	if strings.HasPrefix(comp, "bucket-") {
		return "sqlserver-" + comp
	}
	return comp
}

func (s *stack) run(args ...string) error {
	var cmd *exec.Cmd
	if s.kind == "compose" {
		cmd = exec.Command("docker", append([]string{"compose", "-f", s.composeFile}, args...)...)
	} else {
		cmd = exec.Command("bash", append([]string{s.script}, args...)...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Stop stops a component gracefully (SIGTERM) and waits for it to exit.
func (s *stack) Stop(comp string) error {
	if s.kind == "compose" {
		return s.run("stop", s.service(comp))
	}
	return s.run("stop", comp)
}

// Kill kills a component (SIGKILL).
func (s *stack) Kill(comp string) error {
	if s.kind == "compose" {
		return s.run("kill", s.service(comp))
	}
	return s.run("kill", comp)
}

// Start starts a stopped component; the runner then waits for it.
func (s *stack) Start(comp string) error {
	if s.kind == "compose" {
		return s.run("start", s.service(comp))
	}
	return s.run("start", comp)
}

var reLogTime = regexp.MustCompile(`(?:^|\s)time=(\S+)`)

// Logs returns the proxy's log lines written at or after since.
func (s *stack) Logs(comp string, since time.Time) ([]string, error) {
	var data []byte
	if s.kind == "compose" {
		args := []string{"compose", "-f", s.composeFile, "logs", "--no-color", "--no-log-prefix"}
		if !since.IsZero() {
			args = append(args, "--since", since.UTC().Format(time.RFC3339Nano))
		}
		out, err := exec.Command("docker", append(args, s.service(comp))...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("docker compose logs: %v: %s", err, out)
		}
		data = out
	} else {
		b, err := os.ReadFile(s.logDir + "/" + comp + ".log")
		if err != nil {
			return nil, err
		}
		data = b
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		m := reLogTime.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil || t.Before(since.Add(-50*time.Millisecond)) {
			continue
		}
		lines = append(lines, l)
	}
	return lines, nil
}

// grepLogs counts the lines of comp since `since` that match pattern
// (case-insensitive), as `grep -i` does.
func (s *stack) grepLogs(comp string, since time.Time, pattern string) (int, string, error) {
	re := regexp.MustCompile("(?i)" + pattern)
	lines, err := s.Logs(comp, since)
	if err != nil {
		return 0, "", err
	}
	n, first := 0, ""
	for _, l := range lines {
		if re.MatchString(l) {
			if n == 0 {
				first = l
			}
			n++
		}
	}
	return n, first, nil
}

// ---- HTTP probes

var httpClient = &http.Client{Timeout: 3 * time.Second}

// healthReport is the proxy's /health document.
type healthReport struct {
	Status     string `json:"status"`
	InstanceID string `json:"instance_id"`
	Components []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
		Error  string `json:"error"`
	} `json:"components"`
}

func (h healthReport) component(name string) string {
	for _, c := range h.Components {
		if c.Name == name {
			return c.Status
		}
	}
	return "absent"
}

func getHealth(addr string) (int, healthReport, error) {
	var r healthReport
	resp, err := httpClient.Get("http://" + addr + "/health")
	if err != nil {
		return 0, r, err
	}
	defer resp.Body.Close()
	err = json.NewDecoder(resp.Body).Decode(&r)
	return resp.StatusCode, r, err
}

func live(addr string) bool {
	resp, err := httpClient.Get("http://" + addr + "/health/live")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

// haproxyStatus returns server → status ("UP", "DOWN", "MAINT", …) of the
// tdsgate backend, from the stats CSV.
func (s *stack) haproxyStatus() (map[string]string, error) {
	resp, err := httpClient.Get("http://" + s.stats + "/stats;csv")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var statusCol = -1
	for _, l := range strings.Split(string(body), "\n") {
		f := strings.Split(l, ",")
		if strings.HasPrefix(l, "# ") {
			f[0] = strings.TrimPrefix(f[0], "# ")
			statusCol = slices.Index(f, "status")
			continue
		}
		if statusCol < 0 || len(f) <= statusCol || f[0] != "tdsgate" || f[1] == "BACKEND" || f[1] == "FRONTEND" {
			continue
		}
		out[f[1]] = strings.Fields(f[statusCol] + " ")[0]
	}
	if len(out) == 0 {
		return nil, errors.New("no tdsgate backend servers in the HAProxy stats")
	}
	return out, nil
}

// metric returns the value of the first sample of the /metrics document at
// addr whose series starts with prefix (e.g. `proxy_queue_length{bucket="bucket-001"}`).
func metric(addr, series string) (float64, error) {
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, series+" ") {
			return strconv.ParseFloat(strings.TrimSpace(l[len(series):]), 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", addr, series)
}

// waitFor polls cond every 100 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ready: every proxy live and UP in HAProxy, Redis answering.
func (s *stack) ready() error {
	for i, h := range s.health {
		if !live(h) {
			return fmt.Errorf("%s: /health/live on %s does not answer 200", proxies[i], h)
		}
	}
	st, err := s.haproxyStatus()
	if err != nil {
		return fmt.Errorf("haproxy stats on %s: %w", s.stats, err)
	}
	for _, p := range proxies {
		if st[p] != "UP" {
			return fmt.Errorf("haproxy: %s is %q", p, st[p])
		}
	}
	if _, err := redisDo(s.redis, "PING"); err != nil {
		return fmt.Errorf("redis %s: %w", s.redis, err)
	}
	return nil
}

func (s *stack) waitReady(timeout time.Duration) error {
	var err error
	waitFor(timeout, func() bool { err = s.ready(); return err == nil })
	return err
}

// ---- Redis (RESP2, one connection per command: the runner needs a few)

func redisDo(addr string, args ...string) (any, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return nil, err
	}
	return readRESP(bufio.NewReader(c))
}

func readRESP(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return nil, errors.New("redis: empty reply")
	}
	switch line[0] {
	case '+':
		return line[1:], nil
	case '-':
		return nil, errors.New("redis: " + line[1:])
	case ':':
		return strconv.ParseInt(line[1:], 10, 64)
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return nil, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		return string(buf[:n]), nil
	case '*':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return nil, nil
		}
		out := make([]any, 0, n)
		for i := 0; i < n; i++ {
			v, err := readRESP(r)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	return nil, fmt.Errorf("redis: unexpected reply %q", line)
}

// redisInt GETs key as an integer; -1 when it does not exist.
func (s *stack) redisInt(key string) (int, error) {
	v, err := redisDo(s.redis, "GET", key)
	if err != nil {
		return 0, err
	}
	if v == nil {
		return -1, nil
	}
	return strconv.Atoi(v.(string))
}

func (s *stack) members() ([]string, error) {
	v, err := redisDo(s.redis, "SMEMBERS", "proxy:instances")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range v.([]any) {
		out = append(out, m.(string))
	}
	slices.Sort(out)
	return out, nil
}

// counts returns proxy:bucket:<id>:count of the three buckets.
func (s *stack) counts() ([3]int, error) {
	var out [3]int
	for i := range out {
		n, err := s.redisInt(fmt.Sprintf("proxy:bucket:bucket-%03d:count", i+1))
		if err != nil {
			return out, err
		}
		out[i] = max(n, 0)
	}
	return out, nil
}

// setMax sets bucket-001's max in Redis and returns a function that
// restores the previous value.
func (s *stack) setMax(ctx context.Context, n int) (restore func() error, prev int, err error) {
	key := "proxy:bucket:bucket-001:max"
	prev, err = s.redisInt(key)
	if err != nil {
		return nil, 0, err
	}
	if prev <= 0 {
		return nil, 0, fmt.Errorf("%s is %d: the proxies have not seeded it", key, prev)
	}
	if _, err := redisDo(s.redis, "SET", key, strconv.Itoa(n)); err != nil {
		return nil, 0, err
	}
	// The proxies read max through client-side caching: a SET reaches them
	// at once. Give the invalidation a moment.
	time.Sleep(300 * time.Millisecond)
	return func() error {
		_, err := redisDo(s.redis, "SET", key, strconv.Itoa(prev))
		return err
	}, prev, nil
}

// waitIdle waits until every bucket's count in Redis is 0 and no instance
// has a waiting entry left (proxy:bucket:<id>:waiting: the limiter's
// fairness defers a free slot to an instance with an entry, so a stale one
// would queue the next scenario's first logins).
func (s *stack) waitIdle(timeout time.Duration) ([3]int, bool) {
	var c [3]int
	ok := waitFor(timeout, func() bool {
		var err error
		c, err = s.counts()
		if err != nil || c != [3]int{} {
			return false
		}
		for i := 1; i <= 3; i++ {
			n, err := redisDo(s.redis, "HLEN", fmt.Sprintf("proxy:bucket:bucket-%03d:waiting", i))
			if err != nil || n != int64(0) {
				return false
			}
		}
		return true
	})
	return c, ok
}
