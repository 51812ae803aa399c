package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// request is one token request as the server logged it.
type request struct {
	end     time.Time     // when the server answered
	latency time.Duration // how long it took
}

// parseRequests reads the server's log for its token requests: one JSON
// line per request with its time and duration_seconds (flagx's plain
// "Argument" lines and other messages are skipped).
func parseRequests(log string) []request {
	var out []request
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var line struct {
			Time     time.Time `json:"time"`
			Endpoint string    `json:"endpoint"`
			Duration *float64  `json:"duration_seconds"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil || line.Duration == nil ||
			!strings.HasPrefix(line.Endpoint, "allocate_k8s_token") {
			continue
		}
		out = append(out, request{end: line.Time, latency: time.Duration(*line.Duration * float64(time.Second))})
	}
	return out
}

// overTime splits reqs into bins of equal length by when they were
// answered, from the first request's start to the last answer, and returns
// for each bin that has requests its middle (seconds since the first start)
// and the p50 and p99 of its latencies (seconds).
func overTime(reqs []request, bins int) (p50, p99 plotter.XYs) {
	if len(reqs) == 0 || bins < 1 {
		return nil, nil
	}
	start, end := reqs[0].end.Add(-reqs[0].latency), reqs[0].end
	for _, r := range reqs {
		start = minTime(start, r.end.Add(-r.latency))
		end = maxTime(end, r.end)
	}
	width := max(end.Sub(start)/time.Duration(bins), time.Millisecond)
	groups := make([][]float64, bins)
	for _, r := range reqs {
		i := min(int(r.end.Sub(start)/width), bins-1)
		groups[i] = append(groups[i], r.latency.Seconds())
	}
	for i, g := range groups {
		if len(g) == 0 {
			continue
		}
		slices.Sort(g)
		x := (time.Duration(i)*width + width/2).Seconds()
		p50 = append(p50, plotter.XY{X: x, Y: positive(percentile(g, 0.50))})
		p99 = append(p99, plotter.XY{X: x, Y: positive(percentile(g, 0.99))})
	}
	return p50, p99
}

// percentile returns the nearest-rank q-th percentile of sorted values.
func percentile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// positive keeps a value drawable on a log axis: at least 0.1 ms.
func positive(seconds float64) float64 { return math.Max(seconds, 1e-4) }

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// backendColors tell the backends apart in every panel.
var backendColors = map[string]color.Color{
	"exec": color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	"api":  color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	// The stand-in for M-Lab's original server.
	original: color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
}

// writeChart writes the runs as one SVG: per machine count, each backend's
// p50 and p99 token latency over the storm (from the server's log); last,
// each run's p50, p90, p99 and max (from the loadtest), on log axes.
func writeChart(path string, runs []Run, title string) error {
	var counts []int
	for _, r := range runs {
		if !slices.Contains(counts, r.Machines) {
			counts = append(counts, r.Machines)
		}
	}
	if len(counts) == 0 {
		return fmt.Errorf("chart: no runs")
	}
	var plots []*plot.Plot
	for _, n := range counts {
		p, err := timePlot(n, runs)
		if err != nil {
			return err
		}
		plots = append(plots, p)
	}
	summary, err := summaryPlot(runs, title)
	if err != nil {
		return err
	}
	plots = append(plots, summary)

	const width, rowHeight = 8 * vg.Inch, 3.2 * vg.Inch
	canvas := vgsvg.New(width, rowHeight*vg.Length(len(plots)))
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadX: vg.Millimeter, PadY: 6 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
	dc := draw.New(canvas)
	for i, p := range plots {
		p.Draw(tiles.At(dc, 0, i))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := canvas.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// newLogPlot returns a plot whose Y axis is latency in seconds, log scale.
func newLogPlot(title, xLabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = "latency (s, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Legend.Padding = vg.Points(2)
	p.Add(plotter.NewGrid())
	return p
}

// timePlot draws, for the runs of n machines, each backend's p50 (solid)
// and p99 (dashed) over the storm.
func timePlot(n int, runs []Run) (*plot.Plot, error) {
	p := newLogPlot(fmt.Sprintf("%d machines at once: token latency over the storm, by backend", n),
		"seconds since the first request (latency of the requests answered in each interval)")
	// Latency grows over a storm: the top left stays clear.
	p.Legend.Left = true
	for _, r := range runs {
		if r.Machines != n || len(r.requests) == 0 {
			continue
		}
		p50, p99 := overTime(r.requests, 20)
		for _, s := range []struct {
			name   string
			xys    plotter.XYs
			dashed bool
		}{{"p50", p50, false}, {"p99", p99, true}} {
			l, err := plotter.NewLine(s.xys)
			if err != nil {
				return nil, fmt.Errorf("chart: %d machines, %s %s: %w", n, r.Backend, s.name, err)
			}
			l.Color = backendColors[r.Backend]
			l.Width = vg.Points(1.5)
			if s.dashed {
				l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			}
			p.Add(l)
			p.Legend.Add(r.Backend+" "+s.name, l)
		}
	}
	return p, nil
}

// summaryPlot draws each run's p50, p90, p99 and max as the loadtest
// measured them, one column per run.
func summaryPlot(runs []Run, title string) (*plot.Plot, error) {
	p := newLogPlot("Latency per run: "+title, "")
	var names []string
	for _, r := range runs {
		names = append(names, fmt.Sprintf("%d %s", r.Machines, r.Backend))
	}
	p.NominalX(names...)
	// An empty column on the right holds the legend.
	p.X.Min, p.X.Max = -0.5, float64(len(runs))+0.5
	shapes := []struct {
		name  string
		glyph draw.GlyphDrawer
		get   func(summary) float64
	}{
		{"p50", draw.CircleGlyph{}, func(s summary) float64 { return s.Latency.P50 }},
		{"p90", draw.TriangleGlyph{}, func(s summary) float64 { return s.Latency.P90 }},
		{"p99", draw.SquareGlyph{}, func(s summary) float64 { return s.Latency.P99 }},
		{"max", draw.CrossGlyph{}, func(s summary) float64 { return s.Latency.Max }},
	}
	for _, shape := range shapes {
		var xys plotter.XYs
		for i, r := range runs {
			xys = append(xys, plotter.XY{X: float64(i), Y: positive(shape.get(r.sum) / 1000)})
		}
		sc, err := plotter.NewScatter(xys)
		if err != nil {
			return nil, fmt.Errorf("chart: %s: %w", shape.name, err)
		}
		sc.GlyphStyle.Shape = shape.glyph
		sc.GlyphStyle.Radius = vg.Points(4)
		sc.GlyphStyleFunc = func(i int) draw.GlyphStyle {
			g := sc.GlyphStyle
			g.Color = backendColors[runs[i].Backend]
			return g
		}
		p.Add(sc)
		p.Legend.Add(shape.name, sc)
	}
	return p, nil
}

// chartTitle names what ran where, for the summary panel.
func chartTitle(h header) string {
	return fmt.Sprintf("%d CPUs, Kubernetes %s, %s", h.CPUs, h.Kubernetes, time.Now().UTC().Format("2006-01-02"))
}
