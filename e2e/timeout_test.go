package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hungBinDir returns a -bin-dir whose kubeadm and kubectl are hangScript,
// except that kubectl reading the token slots (`get secret`) answers at
// once that none is taken. At the
// end of the test (after the server stopped, when called before
// startServer) it kills whatever hung process the server failed to kill.
func hungBinDir(t *testing.T) string {
	t.Helper()
	binDir := t.TempDir()
	scripts := map[string]string{
		"kubeadm": hangScript,
		"kubectl": strings.Replace(hangScript, "\n", "\ncase \" $* \" in *\" get secret \"*) exit 0;; esac\n", 1),
	}
	for tool, script := range scripts {
		if err := os.WriteFile(filepath.Join(binDir, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		files, _ := filepath.Glob(filepath.Join(binDir, "*.pid"))
		children, _ := filepath.Glob(filepath.Join(binDir, "*.child"))
		for _, f := range append(files, children...) {
			pid, err := pidFile(f)
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err == nil && string(cmdline) == "sleep\x00600\x00" {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return binDir
}

// TestCommandTimeout runs a kubectl that hangs under a server whose
// -command-timeout is far shorter than its -backend-timeout: the run is
// killed at the command timeout, on its own, and the request gets its 503
// with Retry-After then, not when the backend deadline comes.
func TestCommandTimeout(t *testing.T) {
	parallel(t)
	const (
		commandTimeout = 2 * time.Second
		backendTimeout = 30 * time.Second
		limit          = 10 * time.Second // commandTimeout plus a margin to kill, reap and answer
	)
	e := env(t)
	binDir := hungBinDir(t)
	s := e.startServer(t, serverConfig{binDir: binDir, args: []string{
		"-command-timeout", commandTimeout.String(),
		"-backend-timeout", backendTimeout.String(),
	}})
	tests := []struct {
		tool, path, host string
	}{
		{"kubectl", "/v2/allocate_k8s_token", "mlab1-cto01.mlab-sandbox.measurement-lab.org"},
		{"kubectl", "/v1/node/delete", "mlab1-cto02.mlab-sandbox.measurement-lab.org"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			got := post(t, s, tc.path, extensionBody(t, tc.host, ""))
			t.Logf("answered %d after %s", got.status, got.elapsed.Round(time.Millisecond))
			if got.status != 503 || got.retryAfter == "" {
				t.Errorf("status = %d, Retry-After %q, want 503 with Retry-After", got.status, got.retryAfter)
			}
			if len(got.body) != 0 {
				t.Errorf("body = %q, want empty", got.body)
			}
			if got.elapsed > limit {
				t.Errorf("answered after %s, want within %s (-command-timeout %s, -backend-timeout %s)",
					got.elapsed.Round(time.Millisecond), limit, commandTimeout, backendTimeout)
			}
			if got.elapsed < commandTimeout {
				t.Errorf("answered after %s, before -command-timeout %s: the %s cannot have hung",
					got.elapsed.Round(time.Millisecond), commandTimeout, tc.tool)
			}
			checkHungKilled(t, binDir, tc.tool)
			checkHealthy(t, s)
		})
	}
}
