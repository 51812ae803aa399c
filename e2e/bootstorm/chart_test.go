package main

import (
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseRequests(t *testing.T) {
	log := strings.Join([]string{
		`2026/11/25 21:00:00 Argument listen-address=127.0.0.1:1`,
		`{"time":"2026-11-25T21:00:01.5Z","level":"INFO","msg":"request served","endpoint":"allocate_k8s_token_v2","host":"a","status":200,"duration_seconds":0.25}`,
		`{"time":"2026-11-25T21:00:02Z","level":"WARN","msg":"request refused","endpoint":"allocate_k8s_token_v1","status":408,"duration_seconds":0.001}`,
		`{"time":"2026-11-25T21:00:03Z","level":"INFO","msg":"request served","endpoint":"node_delete","status":200,"duration_seconds":0.5}`,
		`{"time":"2026-11-25T21:00:04Z","level":"INFO","msg":"serving","address":"127.0.0.1:1"}`,
		`{"truncated`,
	}, "\n")
	got := parseRequests(log)
	want := []request{
		{end: time.Date(2026, 11, 25, 21, 0, 1, 500e6, time.UTC), latency: 250 * time.Millisecond},
		{end: time.Date(2026, 11, 25, 21, 0, 2, 0, time.UTC), latency: time.Millisecond},
	}
	if len(got) != len(want) {
		t.Fatalf("parseRequests = %+v, want %+v", got, want)
	}
	for i := range want {
		if !got[i].end.Equal(want[i].end) || got[i].latency != want[i].latency {
			t.Errorf("request %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// queue returns n requests that all started at t0 and were answered one
// every step, as a queue drains: the i-th waited (i+1) steps.
func queue(t0 time.Time, n int, step time.Duration) []request {
	var out []request
	for i := range n {
		lat := time.Duration(i+1) * step
		out = append(out, request{end: t0.Add(lat), latency: lat})
	}
	return out
}

func TestOverTime(t *testing.T) {
	tests := []struct {
		name     string
		reqs     []request
		bins     int
		wantBins int
		// the first and last bins' p50, in seconds
		wantFirst, wantLast float64
	}{
		{name: "none", bins: 10},
		{name: "draining queue", reqs: queue(time.Unix(0, 0), 100, 100*time.Millisecond), bins: 10, wantBins: 10, wantFirst: 0.5, wantLast: 9.5},
		{name: "one request", reqs: queue(time.Unix(0, 0), 1, time.Second), bins: 10, wantBins: 1, wantFirst: 1, wantLast: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p50, p99 := overTime(tc.reqs, tc.bins)
			if len(p50) != tc.wantBins || len(p99) != tc.wantBins {
				t.Fatalf("overTime gave %d and %d bins, want %d", len(p50), len(p99), tc.wantBins)
			}
			if tc.wantBins == 0 {
				return
			}
			if got := p50[0].Y; got != tc.wantFirst {
				t.Errorf("first bin p50 = %g, want %g", got, tc.wantFirst)
			}
			if got := p50[len(p50)-1].Y; got != tc.wantLast {
				t.Errorf("last bin p50 = %g, want %g", got, tc.wantLast)
			}
			for i := range p50 {
				if p99[i].Y < p50[i].Y {
					t.Errorf("bin %d: p99 %g below p50 %g", i, p99[i].Y, p50[i].Y)
				}
			}
		})
	}
}

// TestWriteChart writes a chart of two machine counts on both backends and
// checks that it is well-formed SVG naming every panel.
func TestWriteChart(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC)
	var runs []Run
	for _, n := range []int{100, 500} {
		for _, backend := range []string{"exec", "api"} {
			step := 80 * time.Millisecond
			if backend == "api" {
				step = time.Millisecond
			}
			wall := float64(n) * float64(step) / float64(time.Millisecond)
			r := mustRun(t, n, backend, loadtestJSON(n, wall+1, wall/2, 0))
			r.requests = queue(t0, n, step)
			runs = append(runs, r)
		}
	}
	path := filepath.Join(t.TempDir(), "bootstorm.svg")
	if err := writeChart(path, runs, "2 CPUs, test"); err != nil {
		t.Fatalf("writeChart: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(strings.NewReader(string(b)))
	var root string
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the chart is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Errorf("root element %q, want svg", root)
	}
	for _, want := range []string{"100 machines at once", "500 machines at once", "Latency per run", "exec p99", "api p50", "500 api"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("the chart does not say %q", want)
		}
	}
	if err := writeChart(path, nil, "none"); err == nil {
		t.Error("writeChart with no runs: no error")
	}
}
