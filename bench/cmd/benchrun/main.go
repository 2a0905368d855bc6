// Command benchrun runs the benchmark harness (bench/harness) and writes
// bench/results/<date>-<sha>.md with its charts and latest.md:
//
//	make bench                     # full run, several minutes on 2 cores
//	BENCH_QUICK=1 make bench       # the same sections, small and short
//	go run ./bench/cmd/benchrun -proxy bin/proxy -out bench/results
//
// With -proxy or -standin empty it builds them itself. BENCH_POOL_YAML
// replaces the bucket settings of the tdsgate+pool path (default
// "pool_mode: session"; "off" skips it).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/tdsgate/tdsgate/bench/harness"
)

func main() {
	var o harness.Options
	flag.BoolVar(&o.Quick, "quick", os.Getenv("BENCH_QUICK") != "" && os.Getenv("BENCH_QUICK") != "0", "quick mode (default from BENCH_QUICK)")
	flag.StringVar(&o.OutDir, "out", "bench/results", "directory for the report, its charts and latest.md")
	flag.StringVar(&o.WorkDir, "work", "", "directory for configs and process logs (default: a temporary directory)")
	flag.BoolVar(&o.KeepWork, "keep", false, "keep the temporary work directory")
	flag.StringVar(&o.ProxyBin, "proxy", "", "tdsgate binary (default: go build ./cmd/proxy)")
	flag.StringVar(&o.StandinBin, "standin", "", "stand-in binary (default: go build ./tools/standin)")
	idle := flag.Int("idle", 0, "idle sessions (default 10000; quick 300)")
	flag.IntVar(&o.ChurnPasses, "churn-passes", 0, "interleaved passes of the churn section (default 4; quick 1); the report lists every pass")
	paths := flag.String("paths", "", "comma-separated paths to run (default: all); direct, haproxy and the bare relays are kept as references, and tdsgate-x3 with tdsgate+redis")
	sections := flag.String("sections", "", "comma-separated sections to run: roundtrip,bulk,churn,idle,admission (default: all)")
	flag.BoolVar(&o.NoProfiles, "noprofile", false, "take no CPU profiles of tdsgate during the round trips and bulk runs")
	render := flag.String("render", "", "render the report of a finished run again from its results.json (no benchmark), into -out")
	flag.Parse()
	if *render != "" {
		rep, err := harness.Render(*render, o.OutDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchrun:", err)
			os.Exit(1)
		}
		fmt.Println(rep.Path)
		return
	}
	o.IdleSessions = *idle
	if *paths != "" {
		o.Paths = append(strings.Split(*paths, ","), harness.PathDirect, harness.PathHAProxy, harness.PathBare, harness.PathBareTLS)
		if slices.Contains(o.Paths, harness.PathTdsgateRedis) {
			o.Paths = append(o.Paths, harness.PathTdsgateThree)
		}
	}
	if *sections != "" {
		o.Sections = strings.Split(*sections, ",")
	}
	o.PoolYAML = os.Getenv("BENCH_POOL_YAML")
	o.Log = os.Stderr
	o.Command = "make bench"
	if o.Quick {
		o.Command = "BENCH_QUICK=1 make bench"
	}
	o.Command += "\n# which runs: go build -o bin/proxy ./cmd/proxy && go build -o bin/standin ./tools/standin && go run ./bench/cmd/benchrun -proxy bin/proxy -standin bin/standin -out bench/results"
	if o.PoolYAML != "" && o.PoolYAML != harness.DefaultPoolYAML {
		o.Command = "BENCH_POOL_YAML='" + strings.ReplaceAll(o.PoolYAML, "'", `'\''`) + "' " + o.Command
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := harness.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
	fmt.Println(rep.Path)
}
