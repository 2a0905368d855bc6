package app

import (
	"syscall"
	"testing"
)

func TestMaxClientConns(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if got, want := maxClientConns(0), (int(rl.Cur)-fdReserve)/2; got != want {
		t.Errorf("derived from RLIMIT_NOFILE %d: %d, want %d", rl.Cur, got, want)
	}
	if got := maxClientConns(7); got != 7 {
		t.Errorf("explicit: %d", got)
	}
	if got := maxClientConns(-1); got != 0 {
		t.Errorf("-1 (no cap): %d", got)
	}
}
