package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// startupLimit is how soon a broken set-up must stop the server: seconds,
// not the minute kubeadm spends retrying an unreachable API server.
const startupLimit = 15 * time.Second

// TestBrokenSetUpStopsAtStart starts the server with each set-up that could
// never serve a token, as the user M-Lab's unit or make serve would run it:
// it must exit non-zero at once, with one error line that names the cause.
func TestBrokenSetUpStopsAtStart(t *testing.T) {
	requireRoot(t) // the unreadable case runs the server as another user
	parallel(t)
	e := env(t)
	etc, tools := controlPlaneFiles(t, e)
	admin := filepath.Join(etc, "admin.conf")

	// A server binary every user can reach (t.TempDir's folders are 0700).
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	server := filepath.Join(open, "epoxy-extensions")
	copyExecutable(t, e.serverBinary(t), server)
	onlyKubeadm := filepath.Join(open, "only-kubeadm")
	noExec := filepath.Join(open, "kubectl-not-executable")
	for _, d := range []string{onlyKubeadm, noExec} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyExecutable(t, filepath.Join(tools, "kubeadm"), filepath.Join(onlyKubeadm, "kubeadm"))
	copyExecutable(t, filepath.Join(tools, "kubeadm"), filepath.Join(noExec, "kubeadm"))
	if err := os.WriteFile(filepath.Join(noExec, "kubectl"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		user string // run as this uid through setpriv; root when empty
		env  []string
		args []string
		want []string // in the error line
	}{
		{name: "KUBECONFIG names a missing file", env: []string{"KUBECONFIG=/nonexistent/admin.conf"},
			args: []string{"-bin-dir", tools}, want: []string{"/nonexistent/admin.conf", "does not exist", "KUBECONFIG"}},
		{name: "no kubeconfig anywhere, make serve off a control-plane node",
			args: []string{"-bin-dir", tools}, want: []string{"does not exist", "/etc/kubernetes/admin.conf"}},
		{name: "-kubeconfig missing, api backend", args: []string{"-kube-backend", "api", "-kubeconfig", "/nonexistent/k"},
			want: []string{"/nonexistent/k", "does not exist"}},
		{name: "admin.conf unreadable by the user", user: "65534", env: []string{"KUBECONFIG=" + admin},
			args: []string{"-bin-dir", tools}, want: []string{admin, "not readable", "uid 65534", "run it as root"}},
		{name: "kubectl missing", env: []string{"KUBECONFIG=" + admin},
			args: []string{"-bin-dir", onlyKubeadm}, want: []string{onlyKubeadm, "must hold kubectl"}},
		{name: "kubectl not executable", env: []string{"KUBECONFIG=" + admin},
			args: []string{"-bin-dir", noExec}, want: []string{filepath.Join(noExec, "kubectl"), "not an executable"}},
		{name: "unknown backend", env: []string{"KUBECONFIG=" + admin},
			args: []string{"-kube-backend", "kubeadm-api"}, want: []string{`\"kubeadm-api\"`, "want exec or api"}},
		{name: "-run-as without root", user: "65534", env: []string{"KUBECONFIG=/dev/null"},
			args: []string{"-bin-dir", tools, "-run-as", "65532:65532"}, want: []string{"-run-as 65532:65532 needs the server to start as root"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env == nil && !slices.Contains(tc.args, "-kubeconfig") {
				if _, err := os.Stat("/etc/kubernetes/admin.conf"); err == nil {
					t.Skip("this machine is a control-plane node: /etc/kubernetes/admin.conf exists")
				}
			}
			path, args := server, append([]string{"-listen-address", loopbackAddr(t)}, tc.args...)
			if tc.user != "" {
				path, args = "/usr/bin/setpriv", append([]string{"--reuid=" + tc.user, "--regid=" + tc.user, "--clear-groups", server}, args...)
			}
			env := append([]string{dockerPath, "HOME=" + open}, tc.env...)
			out := &SyncBuffer{}
			p, err := startProcess("epoxy-extensions", out, env, path, args...)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			select {
			case <-p.Exited():
			case <-time.After(startupLimit):
				p.Stop(time.Second)
				t.Fatalf("still running after %s, want an exit at start:\n%s", startupLimit, out)
			}
			if p.ExitErr() == nil {
				t.Fatalf("exited 0 after %s, want non-zero:\n%s", time.Since(start), out)
			}
			var errLine string
			for _, l := range strings.Split(out.String(), "\n") {
				if strings.Contains(l, `"level":"ERROR"`) {
					errLine = l
				}
			}
			for _, w := range tc.want {
				if !strings.Contains(errLine, w) {
					t.Errorf("error line %q does not name %q; whole output:\n%s", errLine, w, out)
				}
			}
		})
	}
}

// TestAPIServerNotUpYet: a control-plane VM starts the server before its
// API server answers. That is no reason to exit: the server serves / and
// says 503 on /ready until the API server answers.
func TestAPIServerNotUpYet(t *testing.T) {
	parallel(t)
	e := env(t)
	port, err := FreePort() // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	conf, err := e.cp.PKI.Kubeconfig(fmt.Sprintf("https://127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "admin.conf")
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	forEachBackend(t, func(t *testing.T, backend string) {
		s := e.startServer(t, serverConfig{backend: backend, args: []string{"-kubeconfig", path}})
		checkHealthy(t, s)
		if got := do(t, http.MethodGet, s.URL+"/ready", nil); got.status != http.StatusServiceUnavailable {
			t.Errorf("GET /ready = %d, want 503 while the API server is down", got.status)
		}
	})
}
