package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// childrenNamed counts the processes whose parent is ppid and whose name
// (comm, as in /proc/PID/stat) is comm. A kubeadm wrapper script counts as
// kubeadm: the kernel names a script after its file.
func childrenNamed(ppid int, comm string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // it exited meanwhile
		}
		// "pid (comm) state ppid …": comm may hold spaces and parentheses.
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		fields := strings.Fields(s[close+1:])
		if len(fields) < 2 || s[open+1:close] != comm {
			continue
		}
		if p, err := strconv.Atoi(fields[1]); err == nil && p == ppid {
			n++
		}
	}
	return n
}

// peakSampler counts, every interval until stopped, the children of ppid
// named comm, and keeps the highest count.
type peakSampler struct {
	stop chan struct{}
	peak chan int
}

func samplePeak(ppid int, comm string, interval time.Duration) *peakSampler {
	p := &peakSampler{stop: make(chan struct{}), peak: make(chan int, 1)}
	go func() {
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		peak := 0
		for {
			peak = max(peak, childrenNamed(ppid, comm))
			select {
			case <-p.stop:
				p.peak <- peak
				return
			case <-ticker.C:
			}
		}
	}()
	return p
}

// Stop ends the sampling and returns the highest count seen.
func (p *peakSampler) Stop() int {
	close(p.stop)
	return <-p.peak
}

// procStatus returns the value of field (such as "VmHWM") in
// /proc/PID/status, or a note saying why there is none.
func procStatus(pid int, field string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return fmt.Sprintf("(unknown: %v)", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "(unknown: no " + field + ")"
}

// kubectlJSON runs kubectl with the admin kubeconfig and `-o json`, and
// decodes its stdout into out.
func kubectlJSON(t *testing.T, e *testEnv, out any, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args = append([]string{"--kubeconfig", e.cp.Kubeconfig}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(e.cp.BinDir, "kubectl"), append(args, "-o", "json")...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl %s: %v: %s", strings.Join(args[2:], " "), err, stderr.String())
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("kubectl %s: decoding its JSON: %v", strings.Join(args[2:], " "), err)
	}
}

// bootstrapSecretsKubectl lists every bootstrap-token Secret with one
// `kubectl get`, by token id.
func bootstrapSecretsKubectl(t *testing.T, e *testEnv) map[string]secret {
	t.Helper()
	var list struct {
		Items []secret `json:"items"`
	}
	kubectlJSON(t, e, &list, "get", "secrets", "-n", "kube-system", "--field-selector", "type="+bootstrapTokenType)
	m := make(map[string]secret, len(list.Items))
	for _, s := range list.Items {
		m[string(s.Data["token-id"])] = s
	}
	return m
}
