package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/m-lab/epoxy-extensions/loadtest/storm"
)

// summary is the part of the loadtest's JSON summary (loadtest/stats.go,
// Summary) that bootstorm reads; the field names are the loadtest's.
type summary struct {
	Machines         int            `json:"machines"`
	WallMS           float64        `json:"wall_ms"`
	Statuses         map[string]int `json:"statuses"`
	Latency          storm.Latency  `json:"latency_ms"`
	OK               int            `json:"ok"`
	DuplicatedTokens int            `json:"duplicated_tokens"`
	Secrets          *struct {
		Secrets       int `json:"bootstrap_secrets"`
		Crossing      int `json:"tokens_crossing_hosts"`
		WithoutSecret int `json:"tokens_without_secret"`
	} `json:"secrets"`
	PeakProcesses    *int     `json:"peak_kubeadm_kubectl_processes"`
	ServerPeakRSSMiB *float64 `json:"server_peak_rss_mib"`
	Failures         []string `json:"failures"`
	CheckErrors      []string `json:"check_errors"`
	Pass             bool     `json:"pass"`
}

// Run is one storm: N machines against a fresh server with one backend.
type Run struct {
	Machines   int    `json:"machines"`
	Backend    string `json:"backend"`
	HostFormat string `json:"host_format"`
	// LoadtestExit is the loadtest's exit status: 0 pass, 1 fail, 2 a check
	// could not run.
	LoadtestExit int `json:"loadtest_exit"`
	// ServerExit is why the server did not exit cleanly; empty when it did.
	ServerExit string `json:"server_exit,omitempty"`
	// Problems says why the run fails bootstorm's checks; empty means it passed.
	Problems []string `json:"problems,omitempty"`
	// CPUSeconds is the CPU time used during the storm by the server, its
	// children (kubeadm, kubectl), kube-apiserver and etcd.
	CPUSeconds map[string]float64 `json:"cpu_seconds"`
	// Loadtest is the loadtest's JSON summary, verbatim.
	Loadtest json.RawMessage `json:"loadtest"`

	sum summary
	// requests are the token requests the server logged, for the chart.
	requests []request
}

// parseSummary reads the loadtest's one-line JSON summary.
func parseSummary(b []byte) (summary, error) {
	var s summary
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("loadtest output is not its JSON summary: %w: %q", err, b)
	}
	if s.Statuses == nil {
		return s, fmt.Errorf("loadtest JSON has no statuses: %q", b)
	}
	return s, nil
}

// check lists why r fails: the loadtest's own verdict, any answer but a
// usable 200, any token crossing hosts or missing from the cluster, an
// unchecked cluster, an unclean server exit.
func check(r Run) []string {
	s := r.sum
	var p []string
	if r.LoadtestExit != 0 {
		p = append(p, fmt.Sprintf("loadtest exited %d", r.LoadtestExit))
	}
	p = append(p, s.Failures...)
	p = append(p, s.CheckErrors...)
	if s.Machines != r.Machines {
		p = append(p, fmt.Sprintf("loadtest sent %d requests, want %d", s.Machines, r.Machines))
	}
	if s.Statuses["200"] != r.Machines || s.OK != r.Machines {
		p = append(p, fmt.Sprintf("%d usable 200 answers of %d (%s)", s.OK, r.Machines, statusLine(s.Statuses)))
	}
	if s.DuplicatedTokens > 0 {
		p = append(p, fmt.Sprintf("%d token(s) handed to more than one host", s.DuplicatedTokens))
	}
	switch c := s.Secrets; {
	case c == nil:
		p = append(p, "tokens crossing hosts not checked")
	case c.Crossing > 0:
		p = append(p, fmt.Sprintf("%d token(s) crossing hosts", c.Crossing))
	case c.WithoutSecret > 0:
		p = append(p, fmt.Sprintf("%d token(s) without their Secret", c.WithoutSecret))
	}
	if r.ServerExit != "" {
		p = append(p, "server: "+r.ServerExit)
	}
	return p
}

// statusLine renders status counts as "200=98 503=2", in code order.
func statusLine(counts map[string]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	// Three-digit codes sort as strings; "error" comes after them.
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + strconv.Itoa(counts[k])
	}
	return strings.Join(parts, " ")
}

// Speedup compares the api backend with exec, and exec with the stand-in
// for the original, at one machine count; a ratio is 0 when a run is
// missing.
type Speedup struct {
	Machines int `json:"machines"`
	// Wall is exec's wall time over api's.
	Wall float64 `json:"wall"`
	// P50 is exec's median latency over api's.
	P50 float64 `json:"p50"`
	// ExecOverOriginal is exec's wall time over the original's: at most 1
	// when exec is no slower.
	ExecOverOriginal float64 `json:"exec_over_original_wall"`
}

// speedups returns, for every machine count with both an exec and an api
// run, in the order the counts first ran, how much faster api was.
func speedups(runs []Run) []Speedup {
	var out []Speedup
	seen := map[int]bool{}
	for _, r := range runs {
		if seen[r.Machines] {
			continue
		}
		seen[r.Machines] = true
		ex, api, orig := find(runs, r.Machines, "exec"), find(runs, r.Machines, "api"), find(runs, r.Machines, original)
		if ex == nil {
			continue
		}
		sp := Speedup{Machines: r.Machines}
		if api != nil && api.sum.WallMS > 0 && api.sum.Latency.P50 > 0 {
			sp.Wall = ex.sum.WallMS / api.sum.WallMS
			sp.P50 = ex.sum.Latency.P50 / api.sum.Latency.P50
		}
		if orig != nil && orig.sum.WallMS > 0 {
			sp.ExecOverOriginal = ex.sum.WallMS / orig.sum.WallMS
		}
		if sp.Wall > 0 || sp.ExecOverOriginal > 0 {
			out = append(out, sp)
		}
	}
	return out
}

// find returns the run of backend at machines, or nil.
func find(runs []Run, machines int, backend string) *Run {
	for i := range runs {
		if runs[i].Machines == machines && runs[i].Backend == backend {
			return &runs[i]
		}
	}
	return nil
}

// printTable writes the runs as a Markdown table, then one speedup line
// per machine count and the problems of failed runs.
func printTable(w io.Writer, runs []Run) {
	fmt.Fprintln(w, "| machines | backend | 200s | wall | p50 | p99 | max | peak server RSS MiB | peak kubeadm/kubectl procs | tokens crossing hosts |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range runs {
		s := r.sum
		rss, procs, crossing := "–", "–", "not checked"
		if s.ServerPeakRSSMiB != nil {
			rss = fmt.Sprintf("%.1f", *s.ServerPeakRSSMiB)
		}
		if s.PeakProcesses != nil {
			procs = strconv.Itoa(*s.PeakProcesses)
		}
		if s.Secrets != nil {
			crossing = strconv.Itoa(s.Secrets.Crossing)
		}
		fmt.Fprintf(w, "| %d | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Machines, r.Backend, s.Statuses["200"], r.Machines, millis(s.WallMS),
			millis(s.Latency.P50), millis(s.Latency.P99), millis(s.Latency.Max), rss, procs, crossing)
	}
	fmt.Fprintln(w)
	if slices.ContainsFunc(runs, func(r Run) bool { return r.CPUSeconds != nil }) {
		fmt.Fprintln(w, "| machines | backend | CPU s: server | its kubeadm/kubectl | kube-apiserver | etcd | total |")
		fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|")
		for _, r := range runs {
			c := r.CPUSeconds
			fmt.Fprintf(w, "| %d | %s | %.1f | %.1f | %.1f | %.1f | %.1f |\n", r.Machines, r.Backend, c["server"],
				c["server children"], c["kube-apiserver"], c["etcd"],
				c["server"]+c["server children"]+c["kube-apiserver"]+c["etcd"])
		}
		fmt.Fprintln(w)
	}
	for _, sp := range speedups(runs) {
		if sp.ExecOverOriginal > 0 {
			fmt.Fprintf(w, "%d machines: exec's wall time is %s the original's\n", sp.Machines, ratio(sp.ExecOverOriginal))
		}
		if sp.Wall > 0 {
			fmt.Fprintf(w, "%d machines: api is %s faster than exec (wall time); p50 ratio %s\n",
				sp.Machines, ratio(sp.Wall), ratio(sp.P50))
		}
	}
	for _, r := range runs {
		if len(r.Problems) > 0 {
			fmt.Fprintf(w, "FAIL %d machines, %s: %s\n", r.Machines, r.Backend, strings.Join(r.Problems, "; "))
		}
	}
}

// millis renders a duration given in milliseconds for the table: whole
// milliseconds below a second, else seconds to the hundredth.
func millis(ms float64) string {
	switch {
	case ms < 10:
		return fmt.Sprintf("%.1f ms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.0f ms", ms)
	}
	return fmt.Sprintf("%.2f s", ms/1000)
}

// ratio renders a speedup: "27.3×", or "0.84×" below 1.
func ratio(x float64) string {
	if x < 1 {
		return fmt.Sprintf("%.2f×", x)
	}
	return fmt.Sprintf("%.1f×", x)
}
