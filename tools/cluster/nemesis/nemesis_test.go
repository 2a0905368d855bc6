package nemesis_test

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tdsgate/tdsgate/tools/cluster"
	"github.com/tdsgate/tdsgate/tools/cluster/nemesis"
)

// Flags of a run by hand (make nemesis): the same test with a longer
// schedule, another seed or lease_loss keep.
var (
	seed      = flag.Uint64("nemesis.seed", 12, "seed of the fault schedule (printed by every run; replays it)")
	duration  = flag.Duration("nemesis.duration", 60*time.Second, "length of the fault schedule")
	instances = flag.Int("nemesis.instances", 4, "tdsgate processes (3..5)")
	clients   = flag.Int("nemesis.clients", 300, "churning clients")
	leaseLoss = flag.String("nemesis.lease-loss", "close", "redis.lease_loss of every instance: close or keep")
	faults    = flag.String("nemesis.faults", "", "comma-separated faults to limit the schedule to, or all (default: all but partition, see ShortRunFaults)")
	report    = flag.String("nemesis.report", "", "also write the result as markdown to this file")
	// keepBound is the overshoot lease_loss keep may show (its stated
	// bound); 0: only report it.
	keepBound = flag.Int("nemesis.keep-bound", 0, "with keep: the most the backend may exceed max (0: report only)")
	// slack is what the default run tolerates with close while issue 12's
	// last overshoots are open: a peak of at most max+slack, in at most
	// 0.5 % of the samples. 0 is the goal, and make nemesis runs with it.
	slack = flag.Int("nemesis.slack", 1, "with close: sessions above max the run tolerates, in at most 0.5% of samples (0: none)")
)

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.Cleanup()
	os.Exit(code)
}

// TestNemesis runs the fault-injection harness: by default 60 s of faults
// (every kind but partition at least once) with seed 12 against 4
// instances and 300 churning clients, lease_loss close. TTL + reaper
// interval after the last fault no slot is lost, and the backend holds at
// most max + slack sessions (default 1, in at most 0.5 % of the samples:
// the open remainder of issue 12 — a full outage's share computed from a
// stale count; the old code peaked at 26 of 10 with half the samples
// above). make nemesis runs every fault with slack 0, the goal.
func TestNemesis(t *testing.T) {
	only := ShortRunFaults()
	switch *faults {
	case "":
		t.Logf("faults: %v; partition is left out of this default run: a partition of ONE instance from Redis "+
			"can still exceed the cap (its fallback share counts free slots the others take); run -nemesis.faults=all "+
			"or make nemesis for every fault", only)
	case "all":
		only = nil
	default:
		only = strings.Split(*faults, ",")
		for _, f := range only {
			if !slices.Contains(nemesis.Faults, f) {
				t.Fatalf("-nemesis.faults: unknown fault %q (known: %v)", f, nemesis.Faults)
			}
		}
	}
	res := nemesis.Run(t, nemesis.Options{Seed: *seed, Duration: *duration, Instances: *instances, Clients: *clients,
		LeaseLoss: *leaseLoss, Faults: only, Logf: t.Logf})
	t.Logf("schedule:\n%s", strings.Join(res.Schedule, "\n"))
	t.Logf("result:\n%s", res.Summary())
	for _, b := range res.Buckets {
		for _, w := range b.Windows {
			t.Logf("%s above max: %s", b.Bucket, w)
		}
	}
	if *report != "" {
		if err := os.MkdirAll(filepath.Dir(*report), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(*report, []byte(nemesis.Markdown(res)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if t.Failed() || !res.OK() {
		t.Logf("timeline:\n%s", res.Events)
		t.Logf("snapshots while above max (instance {bucket=active}, redis hashes):\n%s", strings.Join(res.Snapshots, "\n"))
	}
	for _, f := range nemesis.Faults {
		if res.Injected[f] == 0 && (only == nil || slices.Contains(only, f)) {
			t.Errorf("fault %s never injected", f)
		}
	}
	if res.Sessions < int64(*clients) {
		t.Errorf("only %d sessions completed", res.Sessions)
	}
	switch *leaseLoss {
	case "close":
		if *slack == 0 && !res.OK() {
			t.Errorf("lease_loss close: the backend went above max or slots were lost (seed %d):\n%s", res.Seed, res.Summary())
		}
		for bucket, n := range res.Lost {
			if n != 0 {
				t.Errorf("lease_loss close: %s: %d slots lost (seed %d)", bucket, n, res.Seed)
			}
		}
		for _, b := range res.Buckets {
			if b.Peak > b.Max {
				t.Logf("lease_loss close: %s peaked at %d, max %d, %d of %d samples above (slack %d)", b.Bucket, b.Peak, b.Max, b.Over, b.Samples, *slack)
			}
			if b.Peak > b.Max+int64(*slack) || b.Over*200 > b.Samples {
				t.Errorf("lease_loss close: %s peaked at %d (max %d, slack %d), %d of %d samples above max (seed %d):\n%s",
					b.Bucket, b.Peak, b.Max, *slack, b.Over, b.Samples, res.Seed, res.Summary())
			}
		}
	case "keep":
		for _, b := range res.Buckets {
			over := b.Peak - b.Max
			t.Logf("lease_loss keep: %s: overshoot %d", b.Bucket, max(over, 0))
			if *keepBound > 0 && over > int64(*keepBound) {
				t.Errorf("lease_loss keep: %s peaked %d above max, bound %d", b.Bucket, over, *keepBound)
			}
		}
	}
}

// ShortRunFaults are the faults of the default run (the one in make
// test): every fault but partition, whose overshoot is a known, open
// limit (README "Faults: the cap under failure").
func ShortRunFaults() []string {
	var fs []string
	for _, f := range nemesis.Faults {
		if f != "partition" {
			fs = append(fs, f)
		}
	}
	return fs
}
