// Command bootstorm compares the two Kubernetes backends under a boot storm,
// side by side in one run, with each other and with a stand-in for M-Lab's
// original server (original/: one unbounded `kubeadm token create
// --print-join-command` per request, the original's whole work), against a
// real control plane: it starts etcd and
// kube-apiserver (certificates made fresh for the run) in a temporary folder,
// builds the server and the load command (loadtest/) once, then for each
// machine count and backend starts a fresh server, has that many machines ask
// for a token at the same instant, checks with kubectl that every token's
// Secret names the machine that got it, and stops the server. It prints the
// command line, the machine's CPUs and Go version, a Markdown table of the
// runs and, per machine count, exec's wall time over the original's and
// how much faster api was than exec, the peak memory and time of one kubeadm
// and one kubectl process, measured alone, and
// writes a chart of the runs (-chart, an SVG): per machine count, each
// backend's p50 and p99 token latency over the storm, from the server's own
// log of every request; and each run's p50, p90, p99 and max.
//
// With -via-epoxy every machine boots through M-Lab's ePoxy boot server
// instead (built from the Go module proxy, against the Datastore emulator):
// registered with epoxy_admin, it POSTs stage1.json, then runs stage 3's
// token line and stage 1's BMC line with the real curl, through ePoxy, to a
// server listening where ePoxy v1.2.5 sends them (:8800 and :8801). Each
// machine count runs each backend and then a stand-in extension server that
// answers at once with a canned body, as a yardstick: the table shows each
// machine's time, the server's own time per token and BMC request (from its
// log), its CPU seconds and peak memory, and how each backend's wall time
// compares with the stand-in's.
//
//	make bootstorm [BOOTSTORMFLAGS='-machines 100 -- -max-concurrent-commands 8']
//	go run ./e2e/bootstorm [-machines 100,500] [-backends original,exec,api] [-via-epoxy] [-json] [-chart bootstorm.svg] [-- server flags...]
//
// Every server gets -kube-backend, -kubeconfig (the run's admin kubeconfig),
// -bin-dir and -max-tokens-per-host 0, then the flags after "--". Speed is
// reported, never asserted. Exit status: 0 when every run passed; 1 when a
// run failed a check (the loadtest failed, a machine got no usable 200, a
// token crossed hosts or has no Secret, the server did not exit cleanly); 2
// when the stack could not be set up; 130 when interrupted. Ctrl-C stops
// everything and removes the temporary folder. The Kubernetes binaries come
// from $K8S_BIN_DIR, or e2e/components builds them on first use.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Exit statuses.
const (
	exitPass        = 0
	exitFail        = 1
	exitSetup       = 2
	exitInterrupted = 130
)

// errInterrupted means Ctrl-C (or SIGTERM) ended the run early.
var errInterrupted = errors.New("interrupted")

// config is the parsed command line.
type config struct {
	machines    []int
	backends    []string
	json        bool
	viaEPoxy    bool
	chart       string
	serverFlags []string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// parseArgs reads the command line; errors are already explained on stderr.
func parseArgs(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("bootstorm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: bootstorm [-machines 100,500] [-backends exec,api] [-via-epoxy] [-json] [-chart FILE.svg] [-- server flags...]")
		fs.PrintDefaults()
	}
	machines := fs.String("machines", "100,500", "Comma-separated machine counts; each storms every backend.")
	backends := fs.String("backends", "original,exec,api", "Comma-separated -kube-backend values to compare, in run order; original is the stand-in for M-Lab's original server.")
	fs.BoolVar(&c.json, "json", false, "Print every run's loadtest summary as JSON instead of the table.")
	fs.BoolVar(&c.viaEPoxy, "via-epoxy", false, "Boot every machine through M-Lab's ePoxy boot server (stage1.json, then the token and BMC curl lines), against each backend and a stand-in extension server that answers at once.")
	fs.StringVar(&c.chart, "chart", "bootstorm.svg", "SVG file to write the chart of the runs to; empty writes none.")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	bad := func(err error) (config, error) {
		fmt.Fprintln(stderr, "bootstorm:", err)
		return c, err
	}
	c.serverFlags = fs.Args()
	// Anything left must have come after "--": a stray word is a typo, not
	// a server flag.
	if n := len(c.serverFlags); n > 0 && args[len(args)-n-1] != "--" {
		return bad(fmt.Errorf("unexpected argument %q: server flags go after --", c.serverFlags[0]))
	}
	var err error
	if c.machines, err = parseCounts(*machines); err != nil {
		return bad(err)
	}
	if c.backends, err = parseBackends(*backends); err != nil {
		return bad(err)
	}
	if c.viaEPoxy && slices.Contains(c.backends, original) {
		return bad(fmt.Errorf("-backends %s: -via-epoxy runs the real server's backends only", *backends))
	}
	for _, f := range c.serverFlags {
		name, _, _ := strings.Cut(strings.TrimLeft(f, "-"), "=")
		if strings.HasPrefix(f, "-") && (name == "kube-backend" || name == "listen-address") {
			return bad(fmt.Errorf("server flag %q: bootstorm sets it for each run", f))
		}
	}
	return c, nil
}

// parseCounts reads "100,500": distinct positive machine counts.
func parseCounts(list string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-machines %q: want positive counts separated by commas", list)
		}
		if slices.Contains(out, n) {
			return nil, fmt.Errorf("-machines %q: %d twice", list, n)
		}
		out = append(out, n)
	}
	return out, nil
}

// parseBackends reads "exec,api": distinct -kube-backend values.
func parseBackends(list string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(list, ",") {
		b := strings.TrimSpace(f)
		if b != "exec" && b != "api" && b != original {
			return nil, fmt.Errorf("-backends %q: %q is not original, exec or api", list, b)
		}
		if slices.Contains(out, b) {
			return nil, fmt.Errorf("-backends %q: %s twice", list, b)
		}
		out = append(out, b)
	}
	return out, nil
}

// run is the whole command, returning its exit status.
func run(args []string, stdout, stderr io.Writer) int {
	c, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitPass
	}
	if err != nil {
		return exitSetup
	}
	began := time.Now()
	// The components run in their own process groups: Ctrl-C reaches
	// bootstorm alone, which stops them in order.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once; the children die with us
		fmt.Fprintln(stderr, "bootstorm: stopping (Ctrl-C again to kill at once)")
	}()

	st, err := setUp(stderr)
	if st != nil {
		defer st.close(stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "bootstorm:", err)
		return exitSetup
	}
	h := newHeader(args, c.serverFlags, st)
	h.Processes = measureProcesses(ctx, st)
	if !c.json {
		h.print(stdout)
	}
	if c.viaEPoxy {
		return runViaEPoxy(ctx, c, st, h, began, stdout, stderr)
	}

	var runs []Run
	total := len(c.machines) * len(c.backends)
	for _, n := range c.machines {
		for _, backend := range c.backends {
			if ctx.Err() != nil {
				break
			}
			fmt.Fprintf(stderr, "bootstorm: run %d/%d: %d machines, %s backend\n", len(runs)+1, total, n, backend)
			r, err := st.storm(ctx, len(runs)+1, n, backend, c.serverFlags, stderr)
			if errors.Is(err, errInterrupted) || ctx.Err() != nil {
				break
			}
			if err != nil {
				fmt.Fprintln(stderr, "bootstorm:", err)
				return exitSetup
			}
			verdict := "PASS"
			if len(r.Problems) > 0 {
				verdict = "FAIL: " + strings.Join(r.Problems, "; ")
			}
			fmt.Fprintf(stderr, "bootstorm: wall %s, %s, %s\n", millis(r.sum.WallMS), statusLine(r.sum.Statuses), verdict)
			runs = append(runs, r)
		}
	}
	h.Seconds = time.Since(began).Seconds()

	if c.json {
		out := struct {
			header
			Runs     []Run     `json:"runs"`
			Speedups []Speedup `json:"speedups"`
		}{h, runs, speedups(runs)}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintln(stderr, "bootstorm:", err)
			return exitSetup
		}
	} else {
		fmt.Fprintln(stdout)
		if len(runs) > 0 {
			printTable(stdout, runs)
		}
		fmt.Fprintf(stdout, "\n%d of %d runs in %s, setup included\n",
			len(runs), total, time.Duration(h.Seconds*float64(time.Second)).Round(time.Second))
	}
	if c.chart != "" && len(runs) > 0 {
		if err := writeChart(c.chart, runs, chartTitle(h)); err != nil {
			fmt.Fprintln(stderr, "bootstorm:", err)
			return exitSetup
		}
		fmt.Fprintf(stderr, "bootstorm: chart in %s\n", c.chart)
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "bootstorm: interrupted")
		return exitInterrupted
	case slices.ContainsFunc(runs, func(r Run) bool { return len(r.Problems) > 0 }):
		return exitFail
	}
	return exitPass
}

// runViaEPoxy is run's via-ePoxy mode: for each machine count, every
// backend and then the stand-in, each machine booting through ePoxy.
func runViaEPoxy(ctx context.Context, c config, st *stack, h header, began time.Time, stdout, stderr io.Writer) int {
	if err := st.startEPoxy(ctx, stderr); err != nil {
		fmt.Fprintln(stderr, "bootstorm:", err)
		return exitSetup
	}
	var runs []EPoxyRun
	for i, n := range c.machines {
		rs, err := st.epoxyStorm(ctx, i, n, append(slices.Clone(c.backends), standIn), c.serverFlags, stderr)
		runs = append(runs, rs...)
		if errors.Is(err, errInterrupted) || ctx.Err() != nil {
			break
		}
		if err != nil {
			fmt.Fprintln(stderr, "bootstorm:", err)
			return exitSetup
		}
	}
	h.Seconds = time.Since(began).Seconds()
	if c.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			header
			Runs []EPoxyRun `json:"runs"`
		}{h, runs}); err != nil {
			fmt.Fprintln(stderr, "bootstorm:", err)
			return exitSetup
		}
	} else {
		fmt.Fprintln(stdout)
		printEPoxyTable(stdout, runs)
		fmt.Fprintf(stdout, "\n%d runs in %s, setup included\n", len(runs), time.Duration(h.Seconds*float64(time.Second)).Round(time.Second))
	}
	switch {
	case ctx.Err() != nil:
		return exitInterrupted
	case slices.ContainsFunc(runs, func(r EPoxyRun) bool { return len(r.Problems) > 0 }):
		return exitFail
	}
	return exitPass
}
