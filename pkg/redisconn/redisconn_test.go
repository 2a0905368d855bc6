package redisconn

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestNewNeedsAnAddress(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Fatal("no address accepted")
	}
}

// TestSentinelLazyWhileUnreachable: with no sentinel answering, New still
// returns a client whose commands fail at once with ErrNotConnected.
func TestSentinelLazyWhileUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	c, err := New(Options{SentinelMasterSet: "m", SentinelAddrs: []string{addr}, OpTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	for range 3 {
		if err := c.Do(ctx, c.B().Ping().Build()).Error(); !errors.Is(err, ErrNotConnected) {
			t.Fatalf("PING: %v, want ErrNotConnected", err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("commands took %s", d)
	}
	rs := c.DoMulti(ctx, c.B().Ping().Build(), c.B().Ping().Build())
	if len(rs) != 2 || !errors.Is(rs[1].Error(), ErrNotConnected) {
		t.Fatalf("DoMulti: %v", rs)
	}
}
