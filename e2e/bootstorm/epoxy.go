package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/m-lab/epoxy-extensions/e2e"
	"github.com/m-lab/epoxy-extensions/e2e/components"
	"github.com/m-lab/epoxy-extensions/loadtest/storm"
)

// The via-ePoxy mode's project, and the loopback address where ePoxy's
// private /etc/hosts puts its two extension servers.
const (
	epoxyProject     = "mlab-sandbox"
	epoxyExtensionIP = "127.0.89.1"
	// standIn names the yardstick: an extension server that answers every
	// call at once with a canned body.
	standIn = "stand-in"
	// cannedToken is the stand-in's answer to a token request.
	cannedToken = "abcdef.0123456789abcdef"
	// machineNice is the CPU priority of the machines' curl processes:
	// lower than the server's, ePoxy's and the emulator's, whose CPUs in
	// the field the machines do not share.
	machineNice = 10
)

// epoxyStack is what the via-ePoxy mode adds to the stack.
type epoxyStack struct {
	emu *e2e.Emulator
	ep  *e2e.EPoxy
}

// startEPoxy starts the Datastore emulator and M-Lab's ePoxy boot server
// (built from the Go module proxy on first use).
func (st *stack) startEPoxy(ctx context.Context, stderr io.Writer) error {
	dir, err := components.Ensure(ctx, components.EPoxy(components.EPoxyVersion), stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, "bootstorm: starting the Datastore emulator and ePoxy")
	if st.epoxy.emu, err = e2e.StartEmulator(filepath.Join(st.dir, "datastore-emulator.log")); err != nil {
		return err
	}
	st.epoxy.ep, err = e2e.StartEPoxy(dir, st.epoxy.emu.Host, epoxyProject, epoxyExtensionIP, st.dir)
	return err
}

// closeEPoxy stops what startEPoxy started.
func (st *stack) closeEPoxy() {
	if st.epoxy.ep != nil {
		st.epoxy.ep.Stop()
	}
	if st.epoxy.emu != nil {
		st.epoxy.emu.Stop()
	}
}

// EPoxyRun is one storm through ePoxy: N registered machines each do what
// an M-Lab machine does in stage 1 (stage1.json on ePoxy, then the token and
// BMC curl lines through it) at the same instant, against one target: a
// fresh server with one backend, or the stand-in.
type EPoxyRun struct {
	Machines int    `json:"machines"`
	Target   string `json:"target"`
	// OK counts machines whose three calls all succeeded.
	OK     int     `json:"ok"`
	WallMS float64 `json:"wall_ms"`
	// Latency is each machine's time for its three calls.
	Latency storm.Latency `json:"latency_ms"`
	// ServerToken and ServerBMC are the server's own time per token and
	// per BMC request, from its log lines (the BMC time includes the
	// Datastore emulator's write); nothing for the stand-in.
	ServerToken storm.Latency `json:"server_token_latency_ms"`
	ServerBMC   storm.Latency `json:"server_bmc_latency_ms"`
	// ServerOwn is the server's own share of each request, token and BMC
	// alike: its time less the time in backend calls (API server,
	// kubeadm, DNS, Datastore), from the same log lines.
	ServerOwn storm.Latency `json:"server_own_latency_ms"`
	// ServerCPUSeconds and ServerPeakRSSMiB are the server process's user
	// plus system CPU time and VmHWM at the end of the run.
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	ServerPeakRSSMiB float64 `json:"server_peak_rss_mib"`
	// Crossing counts tokens whose Secret names another machine.
	Crossing int      `json:"tokens_crossing_hosts"`
	Problems []string `json:"problems,omitempty"`
}

// epoxyStorm registers n fresh machines with ePoxy, then storms each target
// in turn with them.
func (st *stack) epoxyStorm(ctx context.Context, idx, n int, targets, extra []string, stderr io.Writer) ([]EPoxyRun, error) {
	machines := make([]*e2e.Machine, n)
	bmcs := map[string]string{}
	for i := range machines {
		machines[i] = e2e.NewMachine(byte('a'+idx%26), i, epoxyProject)
		machines[i].Nice = machineNice
		bmcs[machines[i].BMC] = fmt.Sprintf("192.0.2.%d", 1+i%250)
	}
	fmt.Fprintf(stderr, "bootstorm: registering %d machines with epoxy_admin\n", n)
	if err := st.epoxy.ep.RegisterAll(ctx, machines, "127.0.0.1"); err != nil {
		return nil, err
	}
	dns, err := e2e.StartDNS(bmcs)
	if err != nil {
		return nil, err
	}
	defer dns.Close()
	var runs []EPoxyRun
	for _, target := range targets {
		if ctx.Err() != nil {
			return runs, errInterrupted
		}
		fmt.Fprintf(stderr, "bootstorm: %d machines through ePoxy, %s\n", n, target)
		r, err := st.epoxyRun(ctx, machines, target, append([]string{"-dns-server", dns.Addr}, extra...))
		if err != nil {
			return runs, err
		}
		runs = append(runs, r)
		if err := st.deleteTokens(ctx); err != nil {
			fmt.Fprintln(stderr, "bootstorm: warning:", err)
		}
	}
	return runs, nil
}

// epoxyRun storms target with machines once.
func (st *stack) epoxyRun(ctx context.Context, machines []*e2e.Machine, target string, extra []string) (EPoxyRun, error) {
	r := EPoxyRun{Machines: len(machines), Target: target}
	addrs := []string{net.JoinHostPort(epoxyExtensionIP, strconv.Itoa(e2e.EPoxyTokenPort)),
		net.JoinHostPort(epoxyExtensionIP, strconv.Itoa(e2e.EPoxyBMCPort))}
	var srv *e2e.Server
	if target == standIn {
		stop, err := serveStandIn(addrs)
		if err != nil {
			return r, err
		}
		defer stop()
	} else {
		var err error
		srv, err = e2e.StartServer(e2e.ServerOptions{Binary: st.server, Addr: strings.Join(addrs, ","),
			Args: serverArgs(target, st.cp.Kubeconfig, st.cp.BinDir, extra),
			Env:  []string{"DATASTORE_EMULATOR_HOST=" + st.epoxy.emu.Host}})
		if err != nil {
			return r, fmt.Errorf("starting the server with -kube-backend %s: %w", target, err)
		}
		defer srv.Stop(serverGrace)
	}

	tokens := make([]string, len(machines))
	latencies := make([]time.Duration, len(machines))
	errs := make([]error, len(machines))
	wall := storm.Release(len(machines), func(i int) {
		m, t0 := machines[i], time.Now()
		defer func() { latencies[i] = time.Since(t0) }()
		if errs[i] = m.Stage1(ctx, st.epoxy.ep); errs[i] != nil {
			return
		}
		tok, err := m.Token(ctx)
		if errs[i] = err; err != nil {
			return
		}
		tokens[i] = strings.TrimSpace(tok)
		if code, err := m.StorePassword(ctx, "?p=Pw"+strconv.Itoa(i)); err != nil || code != "200" {
			errs[i] = fmt.Errorf("BMC store: %q, %v", code, err)
		}
	})
	r.WallMS, r.Latency = storm.Ms(wall), storm.Summarize(latencies)
	var firstErr error
	for _, err := range errs {
		if err == nil {
			r.OK++
		} else if firstErr == nil {
			firstErr = err
		}
	}
	if r.OK < len(machines) {
		r.Problems = append(r.Problems, fmt.Sprintf("%d machines failed, first: %v", len(machines)-r.OK, firstErr))
	}
	if srv == nil {
		return r, nil
	}
	if reasons := failureReasons(srv.Log(), 3); len(reasons) > 0 {
		r.Problems = append(r.Problems, "the server says: "+strings.Join(reasons, "; "))
	}
	r.ServerCPUSeconds, r.ServerPeakRSSMiB = procUsage(srv.Pid())
	log := srv.Log()
	r.ServerToken = storm.Summarize(servedDurations(log, "allocate_k8s_token", false))
	r.ServerBMC = storm.Summarize(servedDurations(log, "bmc_store_password", false))
	r.ServerOwn = storm.Summarize(servedDurations(log, "", true))
	crossing, err := st.crossings(ctx, machines, tokens)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	if r.Crossing = crossing; crossing > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d tokens cross hosts", crossing))
	}
	return r, nil
}

// serveStandIn serves, on addrs, an extension server that answers a token
// request with cannedToken and anything else with an empty 200, at once.
func serveStandIn(addrs []string) (func(), error) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if strings.HasSuffix(r.URL.Path, "allocate_k8s_token") {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, cannedToken)
		}
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			srv.Close()
			return nil, fmt.Errorf("stand-in: %w", err)
		}
		wg.Go(func() { srv.Serve(ln) })
	}
	return func() { srv.Close(); wg.Wait() }, nil
}

// servedDurations returns the duration_seconds of every request to an
// endpoint starting with endpoint that the server logged as served; with
// own, less its backend_seconds.
func servedDurations(log, endpoint string, own bool) []time.Duration {
	var out []time.Duration
	for line := range strings.SplitSeq(log, "\n") {
		var l struct {
			Msg      string  `json:"msg"`
			Endpoint string  `json:"endpoint"`
			Duration float64 `json:"duration_seconds"`
			Backend  float64 `json:"backend_seconds"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "request served" && strings.HasPrefix(l.Endpoint, endpoint) {
			if own {
				l.Duration -= l.Backend
			}
			// To the microsecond: the log's floats are no more precise.
			out = append(out, time.Duration(math.Round(l.Duration*1e6))*time.Microsecond)
		}
	}
	return out
}

// failureReasons returns up to n distinct backend errors the server logged
// for requests that failed (status 500 and up).
func failureReasons(log string, n int) []string {
	var out []string
	for line := range strings.SplitSeq(log, "\n") {
		var l struct {
			Status  int    `json:"status"`
			Backend string `json:"backend"`
			Error   string `json:"error"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || l.Status < 500 {
			continue
		}
		reason := l.Backend + ": " + l.Error
		if !slices.Contains(out, reason) {
			out = append(out, reason)
		}
		if len(out) == n {
			break
		}
	}
	return out
}

// procUsage returns pid's user plus system CPU seconds and peak resident
// memory in MiB, or zeros when /proc cannot tell.
func procUsage(pid int) (cpu, rssMiB float64) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command, which is in parentheses: utime and
		// stime are the 12th and 13th, in clock ticks (100 a second).
		if _, rest, ok := strings.Cut(string(b), ") "); ok {
			f := strings.Fields(rest)
			if len(f) > 12 {
				u, _ := strconv.ParseFloat(f[11], 64)
				s, _ := strconv.ParseFloat(f[12], 64)
				cpu = (u + s) / 100
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				rssMiB = kb / 1024
			}
		}
	}
	return cpu, rssMiB
}

// crossings counts tokens whose bootstrap-token Secret does not name the
// machine that got the token, or does not exist.
func (st *stack) crossings(ctx context.Context, machines []*e2e.Machine, tokens []string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	status, body, err := st.cp.API.Do(ctx, http.MethodGet,
		"/api/v1/namespaces/kube-system/secrets?fieldSelector=type%3Dbootstrap.kubernetes.io%2Ftoken", nil)
	if err != nil || status != http.StatusOK {
		return 0, fmt.Errorf("listing bootstrap-token Secrets: %d %v", status, err)
	}
	var list struct {
		Items []struct {
			Data map[string][]byte `json:"data"`
		} `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return 0, fmt.Errorf("listing bootstrap-token Secrets: %w", err)
	}
	described := map[string]string{} // id.secret → description
	for _, s := range list.Items {
		described[string(s.Data["token-id"])+"."+string(s.Data["token-secret"])] = string(s.Data["description"])
	}
	crossing := 0
	for i, m := range machines {
		if tokens[i] != "" && described[tokens[i]] != "Allow "+m.Host+" to join the cluster" {
			crossing++
		}
	}
	return crossing, nil
}

// printEPoxyTable writes the via-ePoxy runs as a Markdown table, and how
// each backend compares with the stand-in at each machine count.
func printEPoxyTable(w io.Writer, runs []EPoxyRun) {
	fmt.Fprintln(w, "| machines | target | machines OK | wall | p50 | p99 | server token p50 / p99 | server BMC p50 / p99 | server's own share p50 / p99 | server CPU | server peak RSS MiB | tokens crossing hosts |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range runs {
		server, cpu, rss, crossing := [3]string{"–", "–", "–"}, "–", "–", "–"
		if r.Target != standIn {
			server = [3]string{millis(r.ServerToken.P50) + " / " + millis(r.ServerToken.P99),
				millis(r.ServerBMC.P50) + " / " + millis(r.ServerBMC.P99),
				millis(r.ServerOwn.P50) + " / " + millis(r.ServerOwn.P99)}
			cpu = fmt.Sprintf("%.2f s", r.ServerCPUSeconds)
			rss = fmt.Sprintf("%.1f", r.ServerPeakRSSMiB)
			crossing = strconv.Itoa(r.Crossing)
		}
		fmt.Fprintf(w, "| %d | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Machines, r.Target,
			r.OK, r.Machines, millis(r.WallMS), millis(r.Latency.P50), millis(r.Latency.P99), server[0], server[1], server[2], cpu, rss, crossing)
	}
	fmt.Fprintln(w)
	for _, r := range runs {
		if r.Target == standIn {
			continue
		}
		for _, y := range runs {
			if y.Target == standIn && y.Machines == r.Machines && y.WallMS > 0 {
				fmt.Fprintf(w, "%d machines: %s took %.2f× the stand-in's wall time\n", r.Machines, r.Target, r.WallMS/y.WallMS)
			}
		}
	}
	for _, r := range runs {
		if len(r.Problems) > 0 {
			fmt.Fprintf(w, "FAIL %d machines, %s: %s\n", r.Machines, r.Target, strings.Join(r.Problems, "; "))
		}
	}
}
