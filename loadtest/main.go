// Command loadtest plays many M-Lab machines booting at once against a
// running epoxy-extensions server: it releases N token requests at the same
// instant, one per hostname, then checks that every machine got its own
// token and, with -kubectl and -kubeconfig, that each token's bootstrap-token
// Secret names the machine that received it. It also reports status codes,
// latency percentiles, the peak number of kubeadm/kubectl processes on this
// machine (the server is expected on loopback; with -server-pid, only the
// server's children count) and, with -server-pid, the server's peak resident
// memory.
//
// Usage:
//
//	go run ./loadtest -url http://127.0.0.1:8800 -n 200 [-server-pid PID] \
//	    [-kubectl kubectl -kubeconfig admin.conf] [-require-ok] [-json]
//
// Exit status: 0 when the run passes; 1 when a token went to two hosts, a
// token's Secret names another host, or (with -require-ok) a machine got no
// usable 200 answer; 2 on bad flags or when a requested check could not run.
// Non-200 answers alone do not fail a run: a server may rightly shed load.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Exit statuses, for scripts.
const (
	exitPass  = 0
	exitFail  = 1
	exitUsage = 2
)

// procRoot is where process information lives; tests use a fake one.
const procRoot = "/proc"

// sampleEvery is how often the backend processes are counted.
const sampleEvery = 10 * time.Millisecond

// kubectlTimeout bounds the one secret listing after the storm.
const kubectlTimeout = 2 * time.Minute

// options are the parsed command-line flags.
type options struct {
	url, endpoint, hostFormat string
	n                         int
	timeout                   time.Duration
	kubectl, kubeconfig       string
	serverPID                 int
	json, requireOK           bool
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// parseFlags reads and checks args. Errors are already explained on stderr.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8800", "Base URL of the running server.")
	fs.IntVar(&o.n, "n", 100, "Machines booting at once: one request each.")
	fs.StringVar(&o.endpoint, "endpoint", "/v2/allocate_k8s_token", "Token endpoint to call; /v1/... expects a bare token, anything else v2 JSON.")
	fs.StringVar(&o.hostFormat, "host-format", "load-%05d.example.org", "fmt format of each machine's hostname, given the machine index 0..n-1.")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "Per-request client timeout (machines' curl has none).")
	fs.StringVar(&o.kubectl, "kubectl", "", "kubectl binary; with -kubeconfig, list bootstrap-token Secrets after the storm to detect tokens crossing hosts.")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "Kubeconfig of the cluster the server creates tokens in; used with -kubectl.")
	fs.IntVar(&o.serverPID, "server-pid", 0, "PID of the server, to report its peak RSS (VmHWM) and count only its kubeadm/kubectl children; 0 skips the RSS and counts machine-wide.")
	fs.BoolVar(&o.json, "json", false, "Print the summary as one JSON object instead of a table.")
	fs.BoolVar(&o.requireOK, "require-ok", false, "Also fail when any machine gets no usable 200 answer.")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	bad := func(format string, a ...any) (options, error) {
		err := fmt.Errorf(format, a...)
		fmt.Fprintln(stderr, "loadtest:", err)
		return o, err
	}
	if fs.NArg() > 0 {
		return bad("unexpected arguments %q", fs.Args())
	}
	if u, err := url.Parse(o.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("-url %q: want http(s)://host[:port]", o.url)
	}
	if !strings.HasPrefix(o.endpoint, "/") {
		return bad("-endpoint %q: want a path starting with /", o.endpoint)
	}
	if o.n < 1 {
		return bad("-n %d: want at least 1", o.n)
	}
	if o.timeout <= 0 {
		return bad("-timeout %v: want a positive duration", o.timeout)
	}
	// One without the other is most likely a typo; skipping the crossing
	// check silently would report a pass that checked less than asked.
	if (o.kubectl == "") != (o.kubeconfig == "") {
		return bad("-kubectl and -kubeconfig go together")
	}
	if o.serverPID < 0 {
		return bad("-server-pid %d: want a pid", o.serverPID)
	}
	return o, nil
}

// run is the whole command, returning its exit status.
func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitPass
	}
	if err != nil {
		return exitUsage
	}
	hosts, err := makeHosts(o.hostFormat, o.n)
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return exitUsage
	}
	// Check the pid before the storm rather than lose the number after it.
	if o.serverPID != 0 {
		if _, err := peakRSS(procRoot, o.serverPID); err != nil {
			fmt.Fprintln(stderr, "loadtest: -server-pid:", err)
			return exitUsage
		}
	}

	// Ctrl-C cancels the requests in flight; the summary still prints.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	target := strings.TrimRight(o.url, "/") + o.endpoint
	client := newClient(o.n, o.timeout)
	defer client.CloseIdleConnections()

	sampler := StartSampler(procRoot, backendNames, o.serverPID, sampleEvery)
	results, wall := Storm(ctx, client, target, strings.HasPrefix(o.endpoint, "/v1/"), hosts)
	peak, sampleErr := sampler.Stop()

	s := Summarize(target, results, wall)
	if sampleErr == nil {
		s.PeakProcesses = &peak
		s.ProcessScope = "whole machine"
		if o.serverPID != 0 {
			s.ProcessScope = fmt.Sprintf("children of pid %d", o.serverPID)
		}
	}
	if o.serverPID != 0 {
		if kib, err := peakRSS(procRoot, o.serverPID); err != nil {
			s.CheckErrors = append(s.CheckErrors, fmt.Sprintf("server peak RSS: %v", err))
		} else {
			mib := float64(kib) / 1024
			s.ServerPeakRSSMiB = &mib
		}
	}
	if o.kubectl != "" {
		c, err := checkCluster(ctx, o.kubectl, o.kubeconfig, results)
		if err != nil {
			s.CheckErrors = append(s.CheckErrors, fmt.Sprintf("crossing check: %v", err))
		} else {
			s.Secrets = &c
		}
	}
	s.Failures = Verdict(s, o.requireOK)
	s.Pass = len(s.Failures) == 0 && len(s.CheckErrors) == 0
	if o.json {
		err = printJSON(stdout, s)
	} else {
		err = printHuman(stdout, s)
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return exitUsage
	}
	// A detected failure outranks a check that could not run.
	switch {
	case len(s.Failures) > 0:
		return exitFail
	case len(s.CheckErrors) > 0:
		return exitUsage
	}
	return exitPass
}

// checkCluster lists the bootstrap-token Secrets once and compares them with
// the tokens handed out.
func checkCluster(ctx context.Context, kubectl, kubeconfig string, results []Result) (SecretCheck, error) {
	ctx, cancel := context.WithTimeout(ctx, kubectlTimeout)
	defer cancel()
	out, err := listSecrets(ctx, kubectl, kubeconfig)
	if err != nil {
		return SecretCheck{}, err
	}
	secrets, err := parseSecrets(out)
	if err != nil {
		return SecretCheck{}, err
	}
	return CheckSecrets(results, secrets), nil
}
