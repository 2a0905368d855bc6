package ebpf

import (
	"net/netip"
	"testing"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "127.0.0.1:1433", want: "127.0.0.1:1433"},
		{in: "[::ffff:10.0.0.1]:1433", want: "10.0.0.1:1433"},
		{in: "[fe80::1%eth0]:1433", want: "[fe80::1]:1433"},
		{in: "[2001:db8::1]:1433", want: "[2001:db8::1]:1433"},
		{in: "127.0.0.1:0", bad: true},
	} {
		got, err := normalize(netip.MustParseAddrPort(tc.in))
		if tc.bad {
			if err == nil {
				t.Errorf("normalize(%s) = %s, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("normalize(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	if _, err := normalize(netip.AddrPort{}); err == nil {
		t.Error("normalize(zero) succeeded")
	}
}

func TestWatchSet(t *testing.T) {
	a := netip.MustParseAddrPort("10.0.0.1:1433")
	b := netip.MustParseAddrPort("10.0.0.2:1433")
	w := newWatchSet()
	steps := []struct {
		op     string
		bucket string
		addr   netip.AddrPort
		want   bool // first watcher of addr (add) / last one gone (remove)
	}{
		{"add", "b1", a, true},
		{"add", "b1", a, false}, // repeat
		{"add", "b2", a, false}, // shared
		{"add", "b2", b, true},
		{"remove", "b1", a, false}, // b2 still watches a
		{"remove", "b1", a, false}, // repeat
		{"remove", "b2", a, true},
		{"remove", "b2", b, true},
		{"remove", "nope", b, false},
	}
	for i, s := range steps {
		var got bool
		if s.op == "add" {
			got = w.add(s.bucket, s.addr)
		} else {
			got = w.remove(s.bucket, s.addr)
		}
		if got != s.want {
			t.Errorf("step %d %s(%s, %s) = %v, want %v", i, s.op, s.bucket, s.addr, got, s.want)
		}
	}
	if len(w.buckets) != 0 || len(w.refs) != 0 {
		t.Errorf("not empty after removing everything: %+v", w)
	}
}
