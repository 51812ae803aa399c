package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// printJSON writes s as one JSON object on one line, for scripts.
func printJSON(w io.Writer, s Summary) error {
	return json.NewEncoder(w).Encode(s)
}

// printHuman writes s as an aligned table for people.
func printHuman(w io.Writer, s Summary) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }

	row("target", "%s", s.URL)
	row("machines", "%d", s.Machines)
	row("wall time", "%.3f s", s.WallMS/1e3)
	row("statuses", "%s", statusLine(s.Statuses))
	row("latency p50 / p90 / p99 / max", "%.1f / %.1f / %.1f / %.1f ms",
		s.Latency.P50, s.Latency.P90, s.Latency.P99, s.Latency.Max)
	row("usable 200 answers", "%d", s.OK)
	row("200 answers without a usable token", "%d", s.BadBodies)
	row("distinct tokens", "%d", s.DistinctTokens)
	row("duplicated tokens (same token, 2+ hosts)", "%d", s.DuplicatedTokens)
	if c := s.Secrets; c != nil {
		row("bootstrap-token Secrets listed", "%d", c.Secrets)
		row("tokens crossing hosts", "%d", c.Crossing)
		row("tokens without secret", "%d", c.WithoutSecret)
	} else {
		row("tokens crossing hosts", "not checked (needs -kubectl and -kubeconfig)")
	}
	if s.PeakProcesses != nil {
		row("peak kubeadm+kubectl processes", "%d (%s)", *s.PeakProcesses, s.ProcessScope)
	} else {
		row("peak kubeadm+kubectl processes", "not sampled (no /proc)")
	}
	if s.ServerPeakRSSMiB != nil {
		// VmHWM covers the server's whole life, not just this storm.
		row("server peak RSS (VmHWM, since start)", "%.1f MiB", *s.ServerPeakRSSMiB)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	list := func(title string, items []string) {
		if len(items) > 0 {
			fmt.Fprintf(w, "%s:\n", title)
			for _, it := range items {
				fmt.Fprintf(w, "  %s\n", it)
			}
		}
	}
	list("errors (first distinct)", s.ErrorSamples)
	list("duplicates", s.DuplicateExamples)
	if s.Secrets != nil {
		list("crossings", s.Secrets.Examples)
	}
	list("checks that could not run", s.CheckErrors)
	var err error
	switch {
	case len(s.Failures) > 0:
		_, err = fmt.Fprintf(w, "FAIL: %s\n", strings.Join(s.Failures, "; "))
	case !s.Pass:
		_, err = fmt.Fprintln(w, "INCOMPLETE: a requested check could not run")
	default:
		_, err = fmt.Fprintln(w, "PASS")
	}
	return err
}

// statusLine renders status counts as "200=198 500=2", codes in order and
// "error" (no answer) last.
func statusLine(counts map[string]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		ai, aerr := strconv.Atoi(a)
		bi, berr := strconv.Atoi(b)
		switch {
		case aerr == nil && berr == nil:
			return ai - bi
		case aerr == nil:
			return -1
		case berr == nil:
			return 1
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, counts[k])
	}
	return strings.Join(parts, " ")
}
