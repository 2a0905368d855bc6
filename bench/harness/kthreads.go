package harness

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// kthreadCPU is the CPU time (user + system) of every kernel thread on the
// host: the children of kthreadd (pid 2), kworker and ksoftirqd among
// them. With relay: sockmap the proxy process is not woken while bytes
// flow; each redirected segment is sent on by the kernel, partly in a
// kernel worker (the psock's backlog), whose CPU the proxy's own
// /proc/<pid>/stat does not show. The figure is the whole machine's:
// background kernel work of anything else running shows up in it too,
// which the other paths' rows (whose proxies leave nothing to kernel
// workers) make visible.
func kthreadCPU() time.Duration {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 2 {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		// f[0] is field 3 (state), f[1] field 4 (ppid); utime and stime
		// are fields 14 and 15.
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 || f[1] != "2" {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * time.Second / clockTicks
	}
	return total
}
