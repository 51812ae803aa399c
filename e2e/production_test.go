package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The production command lines, run exactly as they are written: M-Lab's
// systemd unit with the image the Dockerfile builds, and `make serve` on a
// control-plane node. Neither passes -kubeconfig; the server finds
// /etc/kubernetes/admin.conf (root's, mode 0600) as kubeadm does.

// requireRoot skips t unless it runs as root, which mount namespaces, a
// second user and network namespaces need. CI runs as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a mount namespace, another user or a network namespace; CI runs as root")
	}
}

// mlabUnitArgs are the arguments M-Lab's unit passes to the image
// (m-lab/epoxy-images, configs/virtual_ubuntu/etc/systemd/system/
// epoxy-extension-server.service): `docker run --publish 8800:8800 --env
// KUBECONFIG=/etc/kubernetes/admin.conf --volume
// /etc/kubernetes:/etc/kubernetes:ro --volume /opt/bin:/opt/bin:ro IMAGE
// -bin-dir /opt/bin`.
var mlabUnitArgs = []string{"-bin-dir", "/opt/bin"}

// dockerPath is the PATH docker gives a container whose image sets none.
const dockerPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var static struct {
	once sync.Once
	d    Dockerfile
	bin  string
	err  error
}

// staticServer reads the Dockerfile and builds the server as its build
// stage does, once per run.
func staticServer(t *testing.T, e *testEnv) (Dockerfile, string) {
	t.Helper()
	static.once.Do(func() {
		if static.d, static.err = ReadDockerfile(filepath.Join(e.root, "Dockerfile")); static.err != nil {
			return
		}
		dir, err := os.MkdirTemp(e.dir, "static-")
		if err != nil {
			static.err = err
			return
		}
		static.bin, static.err = BuildAsDockerfile(e.root, dir, static.d)
	})
	if static.err != nil {
		t.Fatal(static.err)
	}
	return static.d, static.bin
}

// controlPlaneFiles makes what a control-plane VM hands the container:
// etc holds admin.conf, root's, mode 0600, as kubeadm writes it; bin holds
// kubeadm and kubectl. Both folders are 0755, as on the VM.
func controlPlaneFiles(t *testing.T, e *testEnv) (etc, bin string) {
	t.Helper()
	dir := t.TempDir()
	etc, bin = filepath.Join(dir, "kubernetes"), filepath.Join(dir, "bin")
	for _, d := range []string{etc, bin} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(e.cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "admin.conf"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"kubeadm", "kubectl"} {
		copyExecutable(t, filepath.Join(e.cp.BinDir, tool), filepath.Join(bin, tool))
	}
	return etc, bin
}

// copyExecutable puts src (symbolic links followed) at dst, mode 0755: a
// hard link when it can, a copy otherwise.
func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	real, err := filepath.EvalSymlinks(src)
	if err != nil {
		t.Fatal(err)
	}
	if os.Link(real, dst) == nil {
		return
	}
	b, err := os.ReadFile(real)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

// startDeployed starts a server with StartDeployed on a free loopback port
// and stops it at the end of t, which fails unless it exits cleanly.
func startDeployed(t *testing.T, opts DeployedOptions) *Server {
	t.Helper()
	opts.Scratch = t.TempDir()
	s, err := StartDeployed(opts)
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, s)
	return s
}

// loopbackAddr returns a free "127.0.0.1:PORT".
func loopbackAddr(t *testing.T) string {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// checkServesToken asks s for a v2 token for a fresh host and fails unless
// the answer is a token the cluster holds for that host.
func checkServesToken(t *testing.T, e *testEnv, s *Server, host string) {
	t.Helper()
	if err := s.WaitReady(t.Context(), 30*time.Second); err != nil {
		t.Fatalf("/ready: %v", err)
	}
	got := post(t, s, "/v2/allocate_k8s_token", extensionBody(t, host, ""))
	if got.status != http.StatusOK {
		t.Fatalf("v2 token = %d, want 200", got.status)
	}
	checkJoinJSON(t, e, string(got.body), host)
}

// TestMLabUnit runs the server as M-Lab's systemd unit runs the image:
// built as the Dockerfile's build stage builds it, started as its USER with
// its ENV and ENTRYPOINT, /etc/kubernetes (admin.conf root's, 0600) and
// /opt/bin (kubeadm, kubectl) mounted read-only, KUBECONFIG set, and the
// arguments -bin-dir /opt/bin. The one difference is the port, given as
// LISTEN_ADDRESS in the environment so that tests do not collide.
func TestMLabUnit(t *testing.T) {
	requireRoot(t)
	parallel(t)
	e := env(t)
	d, bin := staticServer(t, e)
	etc, tools := controlPlaneFiles(t, e)
	addr := loopbackAddr(t)
	path, args := bin, append(slices.Clone(d.Entrypoint[1:]), mlabUnitArgs...)
	if d.User != "" && d.User != "0" && d.User != "0:0" && d.User != "root" {
		uid, gid, _ := strings.Cut(d.User, ":")
		path, args = "/usr/bin/setpriv", append([]string{"--reuid=" + uid, "--regid=" + gid, "--clear-groups", bin}, args...)
	}
	env := append([]string{dockerPath, "HOME=" + t.TempDir(), "KUBECONFIG=/etc/kubernetes/admin.conf",
		"LISTEN_ADDRESS=" + addr, "DATASTORE_EMULATOR_HOST=" + e.emu.Host}, d.Env...)
	s := startDeployed(t, DeployedOptions{
		Binary: path, Args: args, Env: env, Addr: addr,
		Binds: []Bind{{etc, "/etc/kubernetes"}, {tools, "/opt/bin"}},
	})
	checkServesToken(t, e, s, "mlab1-unt01.mlab-sandbox.measurement-lab.org")

	// The user it serves as: RUN_AS when the image sets it, else USER.
	want := "0:0"
	for _, kv := range d.Env {
		if v, ok := strings.CutPrefix(kv, "RUN_AS="); ok && v != "" {
			want = v
		}
	}
	uid, gid, err := ProcessUser(s.Pid())
	if err != nil {
		t.Fatal(err)
	}
	wantUID, wantGID, _ := strings.Cut(want, ":")
	if uid != wantUID+":"+wantUID || gid != wantGID+":"+wantGID {
		t.Errorf("server runs as uid %s, gid %s (real:effective), want %s", uid, gid, want)
	}
	if want != "0:0" {
		copyDir := regexp.MustCompile(`"kubeconfig_copy":"([^"]+)/kubeconfig"`).FindStringSubmatch(s.Log())
		if copyDir == nil {
			t.Fatalf("no kubeconfig_copy in the log")
		}
		if err := s.Terminate(); err != nil {
			t.Fatal(err)
		}
		if err := s.Wait(90 * time.Second); err != nil {
			t.Errorf("the server's exit after SIGTERM: %v", err)
		}
		if _, err := os.Stat(copyDir[1]); !os.IsNotExist(err) {
			t.Errorf("the kubeconfig copy's folder %s is still there after the server stopped (%v)", copyDir[1], err)
		}
	}
}

// makeServeArgs returns the server arguments of the Makefile's serve
// target: the production command line on a control-plane node.
func makeServeArgs(t *testing.T, e *testEnv) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	_, recipe, ok := strings.Cut(string(b), "\nserve:")
	if !ok {
		t.Fatal("Makefile has no serve target")
	}
	for _, line := range strings.Split(recipe, "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "./epoxy-extensions" {
			return f[1:]
		}
	}
	t.Fatal("Makefile's serve target runs no ./epoxy-extensions")
	return nil
}

// TestMakeServe runs `make serve`'s command line as root on a control-plane
// node: no KUBECONFIG, no ~/.kube, admin.conf in /etc/kubernetes, kubeadm
// and kubectl in the -bin-dir it names. Only -listen-address is changed, to
// a free port.
func TestMakeServe(t *testing.T) {
	requireRoot(t)
	parallel(t)
	e := env(t)
	etc, tools := controlPlaneFiles(t, e)
	addr := loopbackAddr(t)
	var args []string
	binDir := ""
	for _, a := range makeServeArgs(t, e) {
		name, value, _ := strings.Cut(a, "=")
		switch name {
		case "-listen-address", "--listen-address":
			a = name + "=" + addr
		case "-bin-dir", "--bin-dir":
			binDir = value
		}
		args = append(args, a)
	}
	if binDir == "" {
		t.Fatalf("make serve names no -bin-dir=DIR: %q", args)
	}
	s := startDeployed(t, DeployedOptions{
		Binary: e.serverBinary(t), Args: args, Addr: addr,
		Env: []string{dockerPath, "HOME=" + t.TempDir(), "DATASTORE_EMULATOR_HOST=" + e.emu.Host},
		// The bin folder last: mount lives in /usr/bin.
		Binds: []Bind{{etc, "/etc/kubernetes"}, {tools, binDir}},
	})
	checkServesToken(t, e, s, "mlab1-srv01.mlab-sandbox.measurement-lab.org")
	if !strings.Contains(s.Log(), `"path":"/etc/kubernetes/admin.conf","source":"admin.conf"`) {
		t.Errorf("the log does not say the kubeconfig was found at /etc/kubernetes/admin.conf:\n%s", s.Log())
	}
}
