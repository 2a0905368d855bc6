package metrics

import (
	"bytes"
	"io"
	"strings"

	vm "github.com/VictoriaMetrics/metrics"
)

// Metadata. VictoriaMetrics/metrics writes "# HELP <family>" and
// "# TYPE <family> <type>" once per family when vm.ExposeMetadata is on
// (switched on in init below, process-wide), but the HELP line carries no
// text. Write fills it in from help: what the family counts and its unit.
// A family missing from help keeps its empty HELP line, which
// `promtool check metrics` reports as "no help text" (and TestMetadata
// fails): every new metric needs an entry here.
//
// The same pass fixes the runtime families that `promtool check metrics`
// flags as misnamed or mistyped (runtimeRenames, runtimeTypes), so the
// whole document lints clean.

func init() { vm.ExposeMetadata(true) }

// help is the help text of every family /metrics exposes.
var help = map[string]string{
	// Per bucket.
	NameConnectionsActive: "Backend connection slots this instance holds for the bucket, idle pooled backends included (connections).",
	NameConnectionsIdle:   "Idle pooled backend connections of the bucket on this instance (pool_mode session); they hold slots, so proxy_connections_active counts them too (connections).",
	NameConnectionsTotal:  "Client logins admitted to the bucket, i.e. slots granted (logins).",
	NameQueueLength:       "Clients waiting in the bucket's queue for a slot (clients).",
	NameQueueWait:         "Time from entering the bucket's queue to the slot grant, for every admitted login; about 0 when a slot was free (seconds).",
	NameQueueAbandoned:    "Clients that hung up while waiting in the bucket's queue (clients).",
	NameBackendConnect:    "Time to dial the bucket's backend and complete PRELOGIN, TLS and LOGIN7, successful logins only (seconds).",
	NameGlobalConnections: "Slots held for the bucket by all instances, as last read from Redis; standalone, this instance's (connections).",
	NameGlobalMax:         "The bucket's connection cap shared by all instances, as last read (connections).",
	NameBreakerOpen:       "1 while the bucket's circuit breaker is open (logins refused at once without dialing the backend), else 0.",
	NameRejections:        "Logins refused with a tdsgate error, by bucket (empty when refused before routing) and TDS error number 50001-50011 (logins).",
	NamePoolHits:          "Logins to a pooling bucket handed an idle pooled backend (logins).",
	NamePoolMisses:        "Logins to a pooling bucket that found no idle backend and logged in at the backend (logins).",
	NamePoolResets:        "Pooled backends made safe for reuse after their client left: ATTENTION if needed, rollback with RESETCONNECTION (connections).",
	NamePoolResetFailures: "Pooled backends that could not be made safe within reset_timeout and were closed (connections).",
	NamePoolDiscarded:     "Pooled backend connections closed, by reason (connections).",
	NameClientSessions:    "Logged-in client sessions of the bucket on this instance; with pool_mode transaction, divided by proxy_connections_active it is the multiplexing ratio (sessions).",
	NameSessionsPinned:    "Client sessions of a pool_mode transaction bucket pinned to their backend connection until they leave, by the first reason (sessions).",
	NameBorrowWait:        "Time a request of a pool_mode transaction session waited for a backend connection of its sub-pool, refused requests excluded (seconds).",
	NameEBPFConnections:   "TCP connections open from this host's cgroup to the bucket's backend, counted by the kernel's eBPF tracker; present only while it runs (connections).",
	NameEBPFDrift:         "proxy_ebpf_backend_connections minus the slots this instance holds; nonzero means connections the proxy lost track of (connections).",
	// Instance-wide.
	NameConnectionErrors:  "Failed client handshakes, backend logins by the stage that failed, and relay errors, by reason (connections).",
	NameRedisOperations:   "Redis limiter operations by operation and result (operations).",
	NameInstanceHeartbeat: "Unix time of this instance's last successful Redis heartbeat; 0 before the first (seconds).",
	NameFallbackMode:      "1 while the limiter runs on this instance's local share of each cap because Redis is unreachable, else 0.",
	NameRelayBytes:        "Bytes relayed between clients and backends, by direction and relay mode (bytes).",
	NameSessions:          "Relayed sessions that ended, by relay mode (sessions).",
	NameHeaderWalks:       "Kernel walks of pooled sessions' server packet headers (header_walk: kernel), armed and stopped early (walks).",
	NameClientRefused:     "Client connections closed at the door before PRELOGIN, by reason: max_client_connections, max_pending_per_source, untrusted_proxy_peer, bad_proxy_header (connections).",
	NameSessionPanics:     "Client sessions that panicked and were recovered: closed, slot released, the process kept serving (sessions).",
	NameClientIdleClosed:  "Logged-in client sessions closed by client_idle_timeout (sessions).",
	NameClientConns:       "Client connections this process holds, logged in or not (connections).",
	NameClientConnsMax:    "The process's max_client_connections in force; 0 when there is no cap (connections).",

	// Go runtime (metrics.WriteProcessMetrics).
	"go_cgo_calls_total":                  "Calls from Go into C made by this process (calls).",
	"go_cpus":                             "Logical CPUs usable by this process (CPUs).",
	"go_gc_cpu_seconds_total":             "CPU time spent by the garbage collector (seconds).",
	"go_gc_duration_seconds":              "Stop-the-world pause durations of the garbage collector (seconds).",
	"go_gc_forced_total":                  "Garbage collections forced by the application (collections).",
	"go_gc_mark_assist_cpu_seconds_total": "CPU time goroutines spent assisting the garbage collector (seconds).",
	"go_gc_pauses_seconds":                "Distribution of stop-the-world garbage collector pauses (seconds).",
	"go_gomaxprocs":                       "GOMAXPROCS: OS threads that may run Go code at once (threads).",
	"go_goroutines":                       "Goroutines that currently exist (goroutines).",
	"go_info":                             "Go version the binary was built with (always 1).",
	"go_info_ext":                         "Go compiler, GOARCH, GOOS and GOROOT of the binary (always 1).",
	"go_memlimit_bytes":                   "The Go runtime's soft memory limit, GOMEMLIMIT (bytes).",
	"go_memstats_alloc_bytes":             "Heap bytes allocated and still in use (bytes).",
	"go_memstats_alloc_bytes_total":       "Heap bytes allocated since start, freed or not (bytes).",
	"go_memstats_buck_hash_sys_bytes":     "Memory used by the profiling bucket hash table (bytes).",
	"go_memstats_frees_total":             "Heap objects freed since start (objects).",
	"go_memstats_gc_cpu_fraction":         "Fraction of available CPU time used by the garbage collector since start (ratio).",
	"go_memstats_gc_sys_bytes":            "Memory used for garbage collector metadata (bytes).",
	"go_memstats_heap_alloc_bytes":        "Heap bytes allocated and still in use (bytes).",
	"go_memstats_heap_idle_bytes":         "Heap bytes in idle spans (bytes).",
	"go_memstats_heap_inuse_bytes":        "Heap bytes in in-use spans (bytes).",
	"go_memstats_heap_objects":            "Allocated heap objects (objects).",
	"go_memstats_heap_released_bytes":     "Heap bytes released to the OS (bytes).",
	"go_memstats_heap_sys_bytes":          "Heap bytes obtained from the OS (bytes).",
	"go_memstats_last_gc_time_seconds":    "Unix time of the last garbage collection (seconds).",
	"go_memstats_lookups_total":           "Pointer lookups by the runtime (lookups).",
	"go_memstats_mallocs_total":           "Heap objects allocated since start (objects).",
	"go_memstats_mcache_inuse_bytes":      "Memory in use by mcache structures (bytes).",
	"go_memstats_mcache_sys_bytes":        "Memory obtained from the OS for mcache structures (bytes).",
	"go_memstats_mspan_inuse_bytes":       "Memory in use by mspan structures (bytes).",
	"go_memstats_mspan_sys_bytes":         "Memory obtained from the OS for mspan structures (bytes).",
	"go_memstats_next_gc_bytes":           "Heap size at which the next garbage collection starts (bytes).",
	"go_memstats_other_sys_bytes":         "Memory used for other runtime allocations (bytes).",
	"go_memstats_stack_inuse_bytes":       "Memory in use by goroutine stacks (bytes).",
	"go_memstats_stack_sys_bytes":         "Memory obtained from the OS for goroutine stacks (bytes).",
	"go_memstats_sys_bytes":               "Memory obtained from the OS by the Go runtime in total (bytes).",
	"go_mutex_wait_seconds_total":         "Time goroutines spent blocked on sync.Mutex and sync.RWMutex (seconds).",
	"go_scavenge_cpu_seconds_total":       "CPU time spent returning memory to the OS (seconds).",
	"go_sched_latencies_seconds":          "Distribution of the time goroutines waited runnable before running (seconds).",
	"go_threads":                          "OS threads created by the Go runtime (threads).",

	// Process (metrics.WriteProcessMetrics, Linux).
	"process_cgroup_cpu_throttled_seconds_total":    "Time the process's cgroup was throttled by its CPU quota (seconds).",
	"process_cpu_seconds_system_total":              "CPU time spent in the kernel on behalf of the process (seconds).",
	"process_cpu_seconds_total":                     "CPU time spent by the process, user and system (seconds).",
	"process_cpu_seconds_user_total":                "CPU time spent by the process in user space (seconds).",
	"process_io_read_bytes_total":                   "Bytes the process read through read-like system calls (bytes).",
	"process_io_read_syscalls_total":                "Read-like system calls made by the process (calls).",
	"process_io_storage_read_bytes_total":           "Bytes the process caused to be read from storage (bytes).",
	"process_io_storage_written_bytes_total":        "Bytes the process caused to be written to storage (bytes).",
	"process_io_write_syscalls_total":               "Write-like system calls made by the process (calls).",
	"process_io_written_bytes_total":                "Bytes the process wrote through write-like system calls (bytes).",
	"process_major_pagefaults_total":                "Page faults of the process that needed disk I/O (faults).",
	"process_max_fds":                               "The process's limit on open file descriptors, RLIMIT_NOFILE (descriptors).",
	"process_minor_pagefaults_total":                "Page faults of the process served without disk I/O (faults).",
	"process_num_threads":                           "OS threads of the process (threads).",
	"process_open_fds":                              "File descriptors the process has open (descriptors).",
	"process_pressure_cpu_stalled_seconds_total":    "Time all of the cgroup's tasks were stalled waiting for CPU, from PSI (seconds).",
	"process_pressure_cpu_waiting_seconds_total":    "Time some of the cgroup's tasks waited for CPU, from PSI (seconds).",
	"process_pressure_io_stalled_seconds_total":     "Time all of the cgroup's tasks were stalled on I/O, from PSI (seconds).",
	"process_pressure_io_waiting_seconds_total":     "Time some of the cgroup's tasks waited for I/O, from PSI (seconds).",
	"process_pressure_memory_stalled_seconds_total": "Time all of the cgroup's tasks were stalled on memory, from PSI (seconds).",
	"process_pressure_memory_waiting_seconds_total": "Time some of the cgroup's tasks waited for memory, from PSI (seconds).",
	"process_resident_memory_anon_bytes":            "Anonymous resident memory of the process (bytes).",
	"process_resident_memory_bytes":                 "Resident memory of the process (bytes).",
	"process_resident_memory_file_bytes":            "File-backed resident memory of the process (bytes).",
	"process_resident_memory_peak_bytes":            "Peak resident memory of the process (bytes).",
	"process_resident_memory_shared_bytes":          "Shared resident memory of the process (bytes).",
	"process_start_time_seconds":                    "Unix time the process started (seconds).",
	"process_virtual_memory_bytes":                  "Virtual memory size of the process (bytes).",
	"process_virtual_memory_peak_bytes":             "Peak virtual memory size of the process (bytes).",
}

// runtimeRenames are the library's runtime families whose names promtool
// rejects: a counter without _total, a gauge ending in _count.
var runtimeRenames = map[string]string{
	"go_cgo_calls_count": "go_cgo_calls_total",
	"go_gc_forced_count": "go_gc_forced_total",
	"go_cpu_count":       "go_cpus",
}

// runtimeTypes are the library's runtime families written as gauges that
// are in fact counters (cumulative, named _total).
var runtimeTypes = map[string]string{
	"process_io_read_bytes_total":            "counter",
	"process_io_read_syscalls_total":         "counter",
	"process_io_storage_read_bytes_total":    "counter",
	"process_io_storage_written_bytes_total": "counter",
	"process_io_write_syscalls_total":        "counter",
	"process_io_written_bytes_total":         "counter",
}

// Help returns the help text of a metric family ("" if it has none).
func Help(family string) string { return help[family] }

var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

// writeWithHelp copies the text-format document doc to w, filling in each
// HELP line's text and applying runtimeRenames and runtimeTypes.
func writeWithHelp(w io.Writer, doc []byte) {
	out := make([]byte, 0, len(doc)+len(doc)/4)
	for len(doc) > 0 {
		line := doc
		if i := bytes.IndexByte(doc, '\n'); i >= 0 {
			line, doc = doc[:i], doc[i+1:]
		} else {
			doc = nil
		}
		out = appendLine(out, line)
		out = append(out, '\n')
	}
	w.Write(out)
}

func appendLine(out, line []byte) []byte {
	if rest, ok := bytes.CutPrefix(line, []byte("# HELP ")); ok {
		fam, text, _ := strings.Cut(string(rest), " ")
		fam = rename(fam)
		if h := help[fam]; h != "" {
			text = helpEscaper.Replace(h)
		}
		out = append(out, "# HELP "...)
		out = append(out, fam...)
		if text != "" {
			out = append(out, ' ')
			out = append(out, text...)
		}
		return out
	}
	if rest, ok := bytes.CutPrefix(line, []byte("# TYPE ")); ok {
		fam, typ, _ := strings.Cut(string(rest), " ")
		fam = rename(fam)
		if t := runtimeTypes[fam]; t != "" {
			typ = t
		}
		return append(append(append(append(out, "# TYPE "...), fam...), ' '), typ...)
	}
	if len(line) > 0 && line[0] != '#' {
		end := bytes.IndexAny(line, "{ ")
		if end < 0 {
			end = len(line)
		}
		if n, ok := runtimeRenames[string(line[:end])]; ok {
			return append(append(out, n...), line[end:]...)
		}
	}
	return append(out, line...)
}

func rename(fam string) string {
	if n, ok := runtimeRenames[fam]; ok {
		return n
	}
	return fam
}
