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
	faults    = flag.String("nemesis.faults", "", "comma-separated faults to limit the schedule to, or all (default: all)")
	report    = flag.String("nemesis.report", "", "also write the result as markdown to this file")
	// keepBound is the overshoot lease_loss keep may show (its stated
	// bound); 0: only report it.
	keepBound = flag.Int("nemesis.keep-bound", 0, "with keep: the most the backend may exceed max (0: report only)")
	// slack is what a run tolerates with close: a peak of at most
	// max+slack, in at most 0.5 % of the samples. 0 by default (issue
	// 12's bar: no sample above max): the +1 windows of a few ms that
	// 60 s runs showed until 2026-12-02 had two causes, both fixed — a
	// slot given back before the backend had let go of its session
	// (backend.Hangup; pkg/frontend TestSlotReleasedAfterBackendLetGo)
	// and an instance started during an outage admitting on its share
	// while its peers still held more than theirs (limiter
	// unreachedGrowAt; TestReproStartDuringOutageWhilePeersHold).
	slack = flag.Int("nemesis.slack", 0, "with close: sessions above max the run tolerates, in at most 0.5% of samples (0: none)")
	// failoverSlack is what a run tolerates with close in a window above
	// max during a Sentinel failover or within failoverGrace after it:
	// replication is asynchronous, so a slot granted by the old primary
	// just before the promotion may be missing on the new one until every
	// instance has re-asserted its holdings. 0 by default: grants are
	// confirmed by a replica (redis.wait_replicas, the default with
	// Sentinel), and a replica in a full sync counts among those a grant
	// waits for (pkg/limiter redis_confirm.go; TestReproFailoverDuringResync,
	// TestReproFailoverAfterEmptyRestart in tools/cluster). Until 2026-12-02 it was 1: a failover 1.3 s after a
	// redis-empty showed 11 of 10 in 1 of 18 strict runs (seed 3).
	failoverSlack = flag.Int("nemesis.failover-slack", 0, "with close: sessions above max tolerated in windows during a Sentinel failover (async replication; 0: none)")
	// spikeSlack is what a run tolerates with close in a spike above max
	// that no 5 ms sample saw, only the stand-in's exact peak. 0: the
	// spikes seen until 2026-12-02 were a released slot handed to a local
	// waiter whose new backend connection reached the stand-in before the
	// stand-in had handled the old one's close; a slot now goes back only
	// once the backend has let go (backend.Hangup).
	spikeSlack = flag.Int("nemesis.spike-slack", 0, "with close: sessions above max tolerated in spikes no sample saw (exact peak only; 0: none)")
)

// failoverGrace is how long after a failover healed a window above max is
// still the failover's: the instances re-assert their holdings at their
// next poll (1 s), plus margin for a loaded machine.
const failoverGrace = 2 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	cluster.Cleanup()
	os.Exit(code)
}

// TestNemesis runs the fault-injection harness: by default 60 s of faults
// (every kind, the partition of one instance from Redis included) with
// seed 12 against 4 instances and 300 churning clients, lease_loss close.
// TTL + reaper interval after the last fault no slot is lost, and not one
// backend sample, nor the stand-in's exact peak, is above max (slack,
// spike-slack and failover-slack 0 by default), a Sentinel failover
// included.
func TestNemesis(t *testing.T) {
	var only []string
	switch *faults {
	case "", "all":
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
		for bucket, n := range res.Lost {
			if n != 0 {
				t.Errorf("lease_loss close: %s: %d slots lost (seed %d)", bucket, n, res.Seed)
			}
		}
		for _, b := range res.Buckets {
			// Each window above max: within slack, within spike-slack if no sample saw it, or within failover-slack
			// if a failover was in progress or just healed.
			allExcused := len(b.Windows) > 0
			for _, w := range b.Windows {
				during := res.During(w, failoverGrace)
				if w.Spike && w.Peak <= b.Max+int64(*spikeSlack) {
					t.Logf("lease_loss close: %s spike above max between two samples (tolerated up to max+%d, open): %s (faults %v)",
						b.Bucket, *spikeSlack, w, during)
					continue
				}
				if slices.Contains(during, "failover") && w.Peak <= b.Max+int64(*failoverSlack) {
					t.Logf("lease_loss close: %s above max during a Sentinel failover (async replication, tolerated up to max+%d): %s (faults %v)",
						b.Bucket, *failoverSlack, w, during)
					continue
				}
				allExcused = false
				if w.Peak > b.Max+int64(*slack) {
					t.Errorf("lease_loss close: %s above max: %s during %v (seed %d)", b.Bucket, w, during, res.Seed)
				}
			}
			bound := b.Max + int64(*slack)
			if allExcused {
				bound = b.Max + int64(max(*slack, *failoverSlack, *spikeSlack))
			}
			if b.Peak > bound || (*slack > 0 && b.Over*200 > b.Samples) {
				t.Errorf("lease_loss close: %s peaked at %d (max %d, bound %d), %d of %d samples above max (seed %d):\n%s",
					b.Bucket, b.Peak, b.Max, bound, b.Over, b.Samples, res.Seed, res.Summary())
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
