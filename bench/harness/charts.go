package harness

import (
	"fmt"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// series is one set of bars (or one line) of a chart.
type series struct {
	name   string
	values []float64
}

// barChart writes a grouped bar chart: one group per label, one bar per
// series in each group.
func barChart(path, title, ylabel string, labels []string, ss []series, logY bool) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	p.Legend.Top = true
	p.Legend.Left = false
	w := vg.Points(min(60/float64(len(ss)), 18))
	for i, s := range ss {
		vals := make(plotter.Values, len(s.values))
		for j, v := range s.values {
			if logY && v <= 0 {
				v = 1e-3 // a missing bar on a log axis
			}
			vals[j] = v
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		b.LineStyle.Width = vg.Length(0)
		b.Color = plotutil.Color(i)
		b.Offset = w * vg.Length(float64(i)-float64(len(ss)-1)/2)
		p.Add(b)
		if len(ss) > 1 {
			p.Legend.Add(s.name, b)
		}
	}
	if logY {
		// Bars start at 0, which a log axis cannot show: start the axis
		// just under the smallest bar.
		lo, hi := 0.0, 0.0
		for _, s := range ss {
			for _, v := range s.values {
				if v > 0 && (lo == 0 || v < lo) {
					lo = v
				}
				hi = max(hi, v)
			}
		}
		if lo == 0 {
			lo, hi = 1, 10
		}
		p.Y.Scale = clampLog{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Min, p.Y.Max = lo/2, hi*3 // room for the legend
	} else {
		p.Y.Min = 0
		p.Y.Max *= 1.2 // room for the legend
	}
	p.NominalX(labels...)
	p.X.Tick.Label.Rotation = math.Pi / 6
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Tick.Label.YAlign = draw.YCenter
	p.Add(plotter.NewGrid())
	width := vg.Length(max(6, 0.9*float64(len(labels)))) * vg.Inch
	return p.Save(width, 4.5*vg.Inch, path)
}

// clampLog is a log scale that draws anything under the axis minimum (a
// bar's base at 0) at the minimum, where plot.LogScale would panic.
type clampLog struct{}

func (clampLog) Normalize(min, max, x float64) float64 {
	return plot.LogScale{}.Normalize(min, max, math.Max(x, min))
}

// lineChart writes one line per series over the x values.
func lineChart(path, title, xlabel, ylabel string, xs []float64, ss []series, logX bool) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.Legend.Top = true
	p.Legend.Left = true
	if logX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.ConstantTicks(ticksFor(xs))
	}
	p.Y.Min = 0
	for i, s := range ss {
		pts := make(plotter.XYs, 0, len(xs))
		for j, x := range xs {
			if j < len(s.values) && s.values[j] > 0 {
				pts = append(pts, plotter.XY{X: x, Y: s.values[j]})
			}
		}
		if len(pts) == 0 {
			continue
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		l.Color = plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i / 7)
		sc.Color = plotutil.Color(i)
		sc.Shape = plotutil.Shape(i)
		p.Add(l, sc)
		p.Legend.Add(s.name, l, sc)
	}
	p.Add(plotter.NewGrid())
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

func ticksFor(xs []float64) []plot.Tick {
	var t []plot.Tick
	for _, x := range xs {
		t = append(t, plot.Tick{Value: x, Label: fmt.Sprint(x)})
	}
	return t
}

// charts writes the report's PNGs into dir and returns their paths.
func (r *Report) charts(dir string) ([]string, error) {
	var out []string
	add := func(name string, err error) error {
		if err != nil {
			return fmt.Errorf("chart %s: %w", name, err)
		}
		out = append(out, filepath.Join(dir, name))
		return nil
	}
	res := &r.Results
	// Round-trip latency percentiles, raw client, one chart per level.
	for _, c := range r.Options.Concurrency {
		rows := filterRT(res.RoundTrips, ClientRaw, c)
		if len(rows) == 0 {
			continue
		}
		var labels []string
		p50, p99, p999 := series{name: "p50"}, series{name: "p99"}, series{name: "p99.9"}
		for _, x := range rows {
			labels = append(labels, x.Path+" "+x.Mode)
			p50.values = append(p50.values, us(x.Lat.P50))
			p99.values = append(p99.values, us(x.Lat.P99))
			p999.values = append(p999.values, us(x.Lat.P999))
		}
		name := fmt.Sprintf("roundtrip-latency-c%d.png", c)
		if err := add(name, barChart(filepath.Join(dir, name),
			fmt.Sprintf("SELECT 1 latency, %d concurrent sessions (raw TDS client)", c), "µs (log scale)",
			labels, []series{p50, p99, p999}, true)); err != nil {
			return out, err
		}
	}
	// Round trips per second against concurrency.
	if len(r.Options.Concurrency) > 0 && len(filterRT(res.RoundTrips, ClientRaw, r.Options.Concurrency[0])) > 0 {
		var xs []float64
		for _, c := range r.Options.Concurrency {
			xs = append(xs, float64(c))
		}
		var ss []series
		for _, t := range r.Targets {
			s := series{name: t.Path + " " + t.Mode}
			for _, c := range r.Options.Concurrency {
				v := 0.0
				for _, x := range filterRT(res.RoundTrips, ClientRaw, c) {
					if x.Path == t.Path && x.Mode == t.Mode {
						v = x.PerSecond
					}
				}
				s.values = append(s.values, v)
			}
			ss = append(ss, s)
		}
		name := "roundtrip-throughput.png"
		if err := add(name, lineChart(filepath.Join(dir, name), "SELECT 1 round trips per second (raw TDS client)",
			"concurrent sessions", "round trips / s", xs, ss, true)); err != nil {
			return out, err
		}
	}
	// Bulk MB/s and CPU per GB.
	if len(res.Bulks) > 0 {
		var labels []string
		var mbRaw, mbGo, cpu series
		mbRaw.name, mbGo.name, cpu.name = "raw TDS client", "go-mssqldb", "proxy CPU s/GB (raw)"
		for _, t := range r.Targets {
			labels = append(labels, t.Path+" "+t.Mode)
			mbRaw.values = append(mbRaw.values, findBulk(res.Bulks, t, ClientRaw).MBps)
			mbGo.values = append(mbGo.values, findBulk(res.Bulks, t, ClientGoMSSQL).MBps)
			cpu.values = append(cpu.values, findBulk(res.Bulks, t, ClientRaw).CPUPerGB)
		}
		if err := add("bulk-mbps.png", barChart(filepath.Join(dir, "bulk-mbps.png"),
			"Bulk result set, MB/s", "MB/s", labels, []series{mbRaw, mbGo}, false)); err != nil {
			return out, err
		}
		if err := add("bulk-cpu.png", barChart(filepath.Join(dir, "bulk-cpu.png"),
			"Proxy CPU seconds (user+sys) per GB relayed", "CPU s / GB", labels, []series{cpu}, false)); err != nil {
			return out, err
		}
	}
	// Churn.
	if len(res.Churns) > 0 {
		var labels []string
		cRaw, cGo := series{name: "raw TDS client"}, series{name: "go-mssqldb"}
		for _, t := range r.Targets {
			labels = append(labels, t.Path+" "+t.Mode)
			cRaw.values = append(cRaw.values, findChurn(res.Churns, t, ClientRaw).PerSecond)
			cGo.values = append(cGo.values, findChurn(res.Churns, t, ClientGoMSSQL).PerSecond)
		}
		if err := add("churn-cps.png", barChart(filepath.Join(dir, "churn-cps.png"),
			fmt.Sprintf("Connect + login + SELECT 1 + close, %d workers: connections/s", r.Options.ChurnWorkers),
			"connections / s", labels, []series{cRaw, cGo}, false)); err != nil {
			return out, err
		}
	}
	// Idle RSS per session.
	{
		var labels []string
		rss := series{name: "proxy RSS per session (KiB)"}
		for _, x := range res.Idles {
			if x.Path == PathDirect {
				continue
			}
			labels = append(labels, x.Path)
			rss.values = append(rss.values, x.RSSPerSession/1024)
		}
		if len(labels) > 0 {
			if err := add("idle-rss.png", barChart(filepath.Join(dir, "idle-rss.png"),
				fmt.Sprintf("Proxy RSS per idle session (%d sessions)", r.Options.IdleSessions), "KiB / session",
				labels, []series{rss}, false)); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

func us(d interface{ Microseconds() int64 }) float64 { return float64(d.Microseconds()) }

func filterRT(rs []RoundTrip, client string, conc int) []RoundTrip {
	var out []RoundTrip
	for _, r := range rs {
		if r.Client == client && r.Conc == conc {
			out = append(out, r)
		}
	}
	return out
}

func findBulk(rs []Bulk, t *Target, client string) Bulk {
	for _, r := range rs {
		if r.Path == t.Path && r.Mode == t.Mode && r.Client == client {
			return r
		}
	}
	return Bulk{}
}

func findChurn(rs []Churn, t *Target, client string) Churn {
	for _, r := range rs {
		if r.Path == t.Path && r.Mode == t.Mode && r.Client == client {
			return r
		}
	}
	return Churn{}
}
