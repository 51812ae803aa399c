package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/m-lab/epoxy-extensions/e2e"
)

// serverGrace is how long a server may take to exit after SIGTERM; with
// the storm over it has nothing in flight and exits at once.
const serverGrace = 30 * time.Second

// stack is the control plane and the binaries every run shares.
type stack struct {
	dir      string
	cp       *e2e.ControlPlane
	server   string // the epoxy-extensions binary
	loadtest string // the loadtest binary
	original string // the stand-in for M-Lab's original server
	epoxy    epoxyStack
}

// setUp starts etcd and kube-apiserver and builds the server and the
// loadtest, all at once. It returns what it started even on error, to close.
func setUp(stderr io.Writer) (*stack, error) {
	root, err := e2e.ModuleRoot()
	if err != nil {
		return nil, fmt.Errorf("%w (run bootstorm from the repository)", err)
	}
	binDir, err := e2e.K8sBinDir(context.Background())
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "epoxy-bootstorm-")
	if err != nil {
		return nil, err
	}
	st := &stack{dir: dir, loadtest: filepath.Join(dir, "loadtest"), original: filepath.Join(dir, "original")}
	fmt.Fprintf(stderr, "bootstorm: starting etcd and kube-apiserver, building the server and loadtest (in %s)\n", dir)
	var (
		cpErr, serverErr, loadErr, origErr error
		wg                                 sync.WaitGroup
	)
	wg.Go(func() { st.cp, cpErr = e2e.StartControlPlane(binDir, dir) })
	wg.Go(func() { st.server, serverErr = e2e.BuildServer(root, dir, false) })
	wg.Go(func() {
		cmd := exec.Command("go", "build", "-o", st.loadtest, "./loadtest")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			loadErr = fmt.Errorf("go build ./loadtest: %w\n%s", err, out)
		}
	})
	wg.Go(func() {
		cmd := exec.Command("go", "build", "-o", st.original, "./e2e/bootstorm/original")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			origErr = fmt.Errorf("go build ./e2e/bootstorm/original: %w\n%s", err, out)
		}
	})
	wg.Wait()
	return st, errors.Join(cpErr, serverErr, loadErr, origErr)
}

// close stops etcd and kube-apiserver and removes the temporary folder.
func (st *stack) close(stderr io.Writer) {
	st.closeEPoxy()
	if st.cp != nil {
		st.cp.Close()
	}
	if err := os.RemoveAll(st.dir); err != nil {
		fmt.Fprintln(stderr, "bootstorm:", err)
		return
	}
	fmt.Fprintf(stderr, "bootstorm: stopped etcd and kube-apiserver, removed %s\n", st.dir)
}

// serverArgs are the flags of a server with backend; StartServer adds
// -listen-address.
func serverArgs(backend, kubeconfig, binDir string, extra []string) []string {
	return append([]string{"-kube-backend", backend, "-kubeconfig", kubeconfig,
		"-bin-dir", binDir, "-max-tokens-per-host", "0"}, extra...)
}

// loadArgs are the loadtest's flags for n machines against the server at
// url with process id pid.
func loadArgs(url, n, pid, kubeconfig, binDir, hostFormat string) []string {
	return []string{"-url", url, "-n", n, "-json", "-server-pid", pid,
		"-kubectl", filepath.Join(binDir, "kubectl"), "-kubeconfig", kubeconfig,
		"-require-ok", "-host-format", hostFormat}
}

// storm is run number idx: a fresh server with backend, n machines at once
// against it, the server stopped. An error means the run could not be made
// (errInterrupted when cut short); a run that failed its checks has Problems.
func (st *stack) storm(ctx context.Context, idx, n int, backend string, extra []string, stderr io.Writer) (Run, error) {
	// Hostnames unique to the run: a token from an earlier run can never
	// pass for one of this run's.
	r := Run{Machines: n, Backend: backend, HostFormat: fmt.Sprintf("bs%d-%s-%%05d.example.org", idx, backend)}
	binary := st.server
	if backend == original {
		binary, extra = st.original, nil // the stand-in takes no server flags
	}
	srv, err := e2e.StartServer(e2e.ServerOptions{Binary: binary, Args: serverArgs(backend, st.cp.Kubeconfig, st.cp.BinDir, extra)})
	if err != nil {
		return r, fmt.Errorf("starting the server with -kube-backend %s: %w", backend, err)
	}
	cpuBefore := cpuSeconds(srv.Pid())
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, st.loadtest, loadArgs(srv.URL, strconv.Itoa(n), strconv.Itoa(srv.Pid()),
		st.cp.Kubeconfig, st.cp.BinDir, r.HostFormat)...)
	cmd.Stdout = &out
	cmd.Stderr = stderr
	// Its own group, so that Ctrl-C reaches bootstorm alone; SIGTERM makes
	// the loadtest cancel its requests and still print its summary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	err = cmd.Run()
	r.CPUSeconds = cpuDelta(cpuBefore, cpuSeconds(srv.Pid()))
	if stopErr := srv.Stop(serverGrace); stopErr != nil {
		r.ServerExit = stopErr.Error()
	}
	r.requests = parseRequests(srv.Log())
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return r, errInterrupted
	case errors.As(err, &exit) && exit.Exited():
		r.LoadtestExit = exit.ExitCode()
	case err != nil:
		return r, fmt.Errorf("loadtest: %w", err)
	}
	r.Loadtest = bytes.TrimSpace(out.Bytes())
	if r.sum, err = parseSummary(r.Loadtest); err != nil {
		return r, fmt.Errorf("loadtest exited %d: %w", r.LoadtestExit, err)
	}
	if r.Problems = check(r); len(r.Problems) > 0 {
		fmt.Fprintf(stderr, "bootstorm: the server's last log lines:\n%s\n", tail(srv.Log(), 20))
	}
	// The crossing check looks up only this run's tokens, so old Secrets
	// cannot fool it; they go so that every run starts from the same cluster.
	if err := st.deleteTokens(ctx); err != nil {
		fmt.Fprintln(stderr, "bootstorm: warning:", err)
	}
	return r, nil
}

// deleteTokens deletes every bootstrap-token Secret in one request.
func (st *stack) deleteTokens(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	path := "/api/v1/namespaces/kube-system/secrets?fieldSelector=type%3Dbootstrap.kubernetes.io%2Ftoken"
	status, body, err := st.cp.API.Do(ctx, http.MethodDelete, path, nil)
	if err != nil {
		return fmt.Errorf("deleting the bootstrap-token Secrets: %w", err)
	}
	if status != http.StatusOK {
		return fmt.Errorf("deleting the bootstrap-token Secrets: %d %s", status, body)
	}
	return nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// header says what ran where, for the README to show with the table.
type header struct {
	Command     string `json:"command"`
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpu_model"`
	GoVersion   string `json:"go_version"`
	Kubernetes  string `json:"kubernetes"`
	Kubectl     string `json:"kubectl"`
	LoadAverage string `json:"load_average_at_start"`
	Server      string `json:"server_command"`
	Loadtest    string `json:"loadtest_command"`
	// Processes is the cost of one kubeadm and one kubectl process of the
	// kind each storm runs, measured alone before the storms.
	Processes []processCost `json:"processes"`
	Seconds   float64       `json:"seconds"`
}

// newHeader describes the machine, and the command lines of bootstorm run
// with args and of each run's server and loadtest.
func newHeader(args, serverFlags []string, st *stack) header {
	h := header{
		Command:     shellLine("go run ./e2e/bootstorm", args),
		CPUs:        runtime.NumCPU(),
		CPUModel:    cpuModel(),
		GoVersion:   runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		Kubernetes:  "unknown",
		Kubectl:     "unknown",
		LoadAverage: "unknown",
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		h.LoadAverage = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	if out, err := exec.Command(filepath.Join(st.cp.BinDir, "kubeadm"), "version", "-o", "short").Output(); err == nil {
		h.Kubernetes = strings.TrimSpace(string(out))
	}
	// kubectl is the machine's (e2e/components links it), not necessarily
	// of the same release.
	if out, err := exec.Command(filepath.Join(st.cp.BinDir, "kubectl"), "version", "--client", "-o", "json").Output(); err == nil {
		var v struct {
			Client struct {
				GitVersion string `json:"gitVersion"`
			} `json:"clientVersion"`
		}
		if json.Unmarshal(out, &v) == nil && v.Client.GitVersion != "" {
			h.Kubectl = v.Client.GitVersion
		}
	}
	h.Server = shellLine("epoxy-extensions", append([]string{"-listen-address", "127.0.0.1:PORT"},
		serverArgs("BACKEND", "admin.conf", "K8S_BIN_DIR", serverFlags)...))
	h.Loadtest = shellLine("loadtest", loadArgs("http://127.0.0.1:PORT", "N", "PID", "admin.conf", "K8S_BIN_DIR",
		"bsRUN-BACKEND-%05d.example.org"))
	return h
}

// print writes h as plain lines above the table.
func (h header) print(w io.Writer) {
	fmt.Fprintf(w, "command:  %s\n", h.Command)
	fmt.Fprintf(w, "machine:  %d CPUs (%s), %s, load average %s at start\n", h.CPUs, h.CPUModel, h.GoVersion, h.LoadAverage)
	fmt.Fprintf(w, "cluster:  etcd + kube-apiserver %s on loopback, kubeadm %s, kubectl %s\n", h.Kubernetes, h.Kubernetes, h.Kubectl)
	fmt.Fprintf(w, "server:   %s\n", h.Server)
	fmt.Fprintf(w, "loadtest: %s\n", h.Loadtest)
	for _, p := range h.Processes {
		fmt.Fprintf(w, "process:  %s\n", p)
	}
}

// cpuModel is the first "model name" of /proc/cpuinfo, or "unknown model".
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown model"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return "unknown model"
}

// shellLine returns prog followed by args, each as one shell word.
func shellLine(prog string, args []string) string {
	for _, a := range args {
		prog += " " + quote(a)
	}
	return prog
}

// quote returns s as one shell word.
func quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@%+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
