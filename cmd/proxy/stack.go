package main

import (
	"os"
	"strings"
	"syscall"
)

// envStackStart is the GODEBUG setting the proxy runs with: new goroutines
// start with the runtime's minimum stack (2 KiB).
//
// Since Go 1.19 the runtime starts each new goroutine with the average
// stack size the last garbage collection scanned, rounded up to a power
// of two after adding its guard. With thousands of idle sessions that
// average comes from their parked relay goroutines (about 1–3 KiB in use)
// and rounds up to 4 KiB, so every new relay goroutine would start at
// 4 KiB although the one that waits on the client parks in under 1 KiB.
// The setting is read only when a process starts, hence the re-exec.
const envStackStart = "adaptivestackstart=0"

// reexecWithSmallStacks replaces the process with itself, GODEBUG
// extended by envStackStart, unless GODEBUG already says something about
// adaptivestackstart (an operator's choice wins). It returns only if the
// setting is already in force or the exec failed (the proxy then runs
// with the runtime's default: correct, with idle sessions a few KiB
// larger).
func reexecWithSmallStacks() {
	gd := os.Getenv("GODEBUG")
	if strings.Contains(gd, "adaptivestackstart=") {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return
	}
	if gd != "" {
		gd += ","
	}
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	env = append(env, "GODEBUG="+gd+envStackStart)
	_ = syscall.Exec(exe, os.Args, env)
}
