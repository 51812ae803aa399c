package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/m-lab/epoxy-extensions/token"
)

// original names the stand-in for M-Lab's original server among the
// backends (original/).
const original = "original"

// costSamples is how many times measureProcesses runs each program.
const costSamples = 5

// processCost is what one run of a program costs, measured alone: the
// largest peak resident set of costSamples runs, and their median wall and
// CPU (user plus system) time.
type processCost struct {
	Command    string  `json:"command"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	WallMS     float64 `json:"wall_ms"`
	CPUMS      float64 `json:"cpu_ms"`
	Error      string  `json:"error,omitempty"`
}

func (p processCost) String() string {
	if p.Error != "" {
		return fmt.Sprintf("%s: %s", p.Command, p.Error)
	}
	return fmt.Sprintf("%s: peak RSS %.1f MiB, %.0f ms wall, %.0f ms CPU (median of %d, run alone)",
		p.Command, p.PeakRSSMiB, p.WallMS, p.CPUMS, costSamples)
}

// measureProcesses runs, one at a time, the program each target runs per
// token: the original's `kubeadm token create --print-join-command` and the
// exec backend's `kubectl create --filename -` of a List of one
// bootstrap-token Secret, then
// deletes the tokens they made.
func measureProcesses(ctx context.Context, st *stack) []processCost {
	kc := st.cp.Kubeconfig
	kubeadm := processCost{Command: "kubeadm token create --print-join-command"}
	kubectl := processCost{Command: "kubectl create --filename - of a List, GOGC=400 (the exec backend's one process per batch of up to 50 tokens)"}
	kubeadm.measure(ctx, func() (*exec.Cmd, func(), error) {
		return exec.Command(filepath.Join(st.cp.BinDir, "kubeadm"), "token", "create", "--ttl", "5m",
			"--description", "bootstorm: one process measured", "--print-join-command", "--kubeconfig", kc), func() {}, nil
	})
	kubectl.measure(ctx, func() (*exec.Cmd, func(), error) {
		tok, err := bootstraputil.GenerateBootstrapToken()
		if err != nil {
			return nil, nil, err
		}
		id, secret, _ := strings.Cut(tok, ".")
		s := token.BootstrapSecret(id, secret, "bootstorm: one process measured", time.Now().Add(5*time.Minute))
		s.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}
		b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": []any{s}})
		if err != nil {
			return nil, nil, err
		}
		// As the exec backend runs it: the List of Secrets on stdin.
		cmd := exec.Command(filepath.Join(st.cp.BinDir, "kubectl"), "--kubeconfig", kc, "create",
			"--filename", "-", "--output", "name", "--validate=false")
		cmd.Stdin = bytes.NewReader(b)
		cmd.Env = append(os.Environ(), "GOGC=400")
		return cmd, func() {}, nil
	})
	if err := st.deleteTokens(ctx); err != nil {
		kubectl.Error = err.Error()
	}
	return []processCost{kubeadm, kubectl}
}

// measure runs the command next returns costSamples times and records its
// cost in p, or the first failure.
func (p *processCost) measure(ctx context.Context, next func() (*exec.Cmd, func(), error)) {
	var walls, cpus []float64
	for range costSamples {
		if ctx.Err() != nil {
			p.Error = ctx.Err().Error()
			return
		}
		cmd, done, err := next()
		if err != nil {
			p.Error = err.Error()
			return
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		err = cmd.Run()
		wall := time.Since(start)
		done()
		if err != nil {
			p.Error = fmt.Sprintf("%v: %s", err, strings.TrimSpace(stderr.String()))
			return
		}
		ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		if !ok {
			p.Error = "no resource usage"
			return
		}
		p.PeakRSSMiB = max(p.PeakRSSMiB, float64(ru.Maxrss)/1024) // KiB on Linux
		walls = append(walls, float64(wall.Microseconds())/1000)
		cpus = append(cpus, float64((cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime()).Microseconds())/1000)
	}
	p.WallMS, p.CPUMS = median(walls), median(cpus)
}

func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// clockTicks is the unit of the times in /proc/PID/stat (USER_HZ, 100 on
// Linux).
const clockTicks = 100

// cpuSeconds returns the CPU time (user plus system, in seconds) used so far
// by the server with pid, by its reaped children (kubeadm, kubectl), and by
// the kube-apiserver and etcd that bootstorm started: where a storm's time
// goes on a machine with few cores.
func cpuSeconds(pid int) map[string]float64 {
	out := map[string]float64{}
	if f, ok := procStat(pid); ok {
		out["server"] = (f[13] + f[14]) / clockTicks
		out["server children"] = (f[15] + f[16]) / clockTicks
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var p int
		if _, err := fmt.Sscanf(e.Name(), "%d", &p); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		comm := string(b[bytes.IndexByte(b, '(')+1 : bytes.LastIndexByte(b, ')')])
		if comm != "kube-apiserver" && comm != "etcd" {
			continue
		}
		if f, ok := procStat(p); ok && int(f[3]) == os.Getpid() {
			out[comm] += (f[13] + f[14]) / clockTicks
		}
	}
	return out
}

// procStat returns the numeric fields of /proc/PID/stat, indexed as in
// proc(5) from 0 (so f[3] is the parent pid, f[13] utime); the pid and comm
// fields are 0.
func procStat(pid int) ([]float64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, false
	}
	fields := strings.Fields(string(b[i+1:]))
	f := make([]float64, 2, 2+len(fields))
	for _, s := range fields {
		var x float64
		fmt.Sscanf(s, "%g", &x) // the state letter reads as 0
		f = append(f, x)
	}
	return f, len(f) > 16
}

// cpuDelta returns after minus before, key by key.
func cpuDelta(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		d[k] = v - before[k]
	}
	return d
}
