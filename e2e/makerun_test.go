package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMakeRun runs `make run` as a person would, as whoever runs the tests:
// it waits for /ready, gets a token the stack's API server accepts, stores a
// BMC password, sends SIGTERM to make, and checks that no process and no
// temporary folder of the stack is left.
func TestMakeRun(t *testing.T) {
	waiting(t)
	if testing.Short() {
		t.Skip("starts the whole local stack; skipped with -short")
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	tmp := stackTemp(t, 0o700)
	port := freePort(t)
	env := append(os.Environ(), "TMPDIR="+tmp)
	if raceEnabled {
		// The same command with the race detector on, which also spares
		// make test a second build of every package without it.
		env = append(env, "GOFLAGS="+strings.TrimSpace(os.Getenv("GOFLAGS")+" -race"))
	}
	runStack(t, tmp, port, env, nil, "make", "-s", "-C", root, "run",
		"DEVFLAGS=-listen-address 127.0.0.1:"+strconv.Itoa(port))
}

// TestRunAsOrdinaryUser runs the local stack as uid 65534 (nobody), with
// nothing of root's: its own HOME and TMPDIR, a copy of the Kubernetes
// binaries, the server the tests built. It needs root to switch users; as
// an ordinary user, TestMakeRun already is this test.
func TestRunAsOrdinaryUser(t *testing.T) {
	waiting(t)
	if testing.Short() {
		t.Skip("starts the whole local stack; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("already an ordinary user: TestMakeRun covers it")
	}
	const uid, gid = 65534, 65534
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	binDir, err := K8sBinDir(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Everything nobody uses lives in one folder it can read: t.TempDir's
	// parent is root's alone.
	base := stackTemp(t, 0o755)
	bins := filepath.Join(base, "bin")
	home := filepath.Join(base, "home")
	tmp := filepath.Join(base, "tmp")
	for _, d := range []string{bins, home, tmp} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{home, tmp} {
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	copyPrograms(t, binDir, bins, "etcd", "kube-apiserver", "kubeadm", "kubectl")
	devstack := filepath.Join(bins, "devstack")
	// The tests' own build of the server (with the race detector when the
	// tests have it, as TestMakeRun), linked into the folder nobody reads.
	server := filepath.Join(bins, "epoxy-extensions")
	copyExecutable(t, env(t).serverBinary(t), server)
	buildArgs := []string{"build", "-o", devstack}
	if raceEnabled {
		buildArgs = append(buildArgs, "-race")
	}
	build := exec.Command("go", append(buildArgs, "./e2e/devstack")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./e2e/devstack: %v\n%s", err, out)
	}
	port := freePort(t)
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TMPDIR=" + tmp, "K8S_BIN_DIR=" + bins}
	// The JVM writes /tmp/hsperfdata_<user> unless told not to, whatever
	// TMPDIR says.
	perfData := filepath.Join(os.TempDir(), "hsperfdata_nobody")
	_, err = os.Stat(perfData)
	hadPerfData := err == nil
	runStack(t, tmp, port, env, &syscall.Credential{Uid: uid, Gid: gid}, devstack,
		"-listen-address", "127.0.0.1:"+strconv.Itoa(port), "-server", server)
	if _, err := os.Stat(perfData); err == nil && !hadPerfData {
		t.Errorf("the stack left %s behind", perfData)
		os.RemoveAll(perfData)
	}
}

// stackTemp returns a fresh folder with mode perm, removed at the end.
func stackTemp(t *testing.T, perm os.FileMode) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "epoxy-stack-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, perm); err != nil {
		t.Fatal(err)
	}
	return dir
}

func freePort(t *testing.T) int {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// copyPrograms copies (hard-links where it can) the named programs from src
// to dst, keeping links as links.
func copyPrograms(t *testing.T, src, dst string, names ...string) {
	t.Helper()
	for _, n := range names {
		from, to := filepath.Join(src, n), filepath.Join(dst, n)
		if target, err := os.Readlink(from); err == nil {
			if err := os.Symlink(target, to); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if os.Link(from, to) == nil {
			continue
		}
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// kubeconfigLine and lookupLine find, in what the stack prints, its admin
// kubeconfig and the Datastore emulator's lookup URL.
var (
	kubeconfigLine = regexp.MustCompile(`--kubeconfig (\S+)`)
	lookupLine     = regexp.MustCompile(`--data-binary ('\{"keys".*\}') (http://\S+:lookup)`)
)

// runStack starts the stack with name and args (as cred's user when not
// nil), with TMPDIR tmp, checks it serves, stops it with SIGTERM and checks
// it left nothing behind.
func runStack(t *testing.T, tmp string, port int, env []string, cred *syscall.Credential, name string, args ...string) {
	t.Helper()
	var out SyncBuffer
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	if err := onSpawnThread(cmd.Start); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped { // a failure on the way: kill what is left
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, out.String())
		}
	}()

	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	err := Poll(5*time.Minute, 250*time.Millisecond, nil, func(ctx context.Context) error {
		select {
		case err := <-done:
			stopped = true
			return fmt.Errorf("%s exited before it was ready: %v", name, err)
		default:
		}
		if err := httpOK(ctx, http.DefaultClient, url+"/ready", "ready"); err != nil {
			return err
		}
		if !strings.Contains(out.String(), "component logs:") { // the last usage line
			return fmt.Errorf("usage lines not printed yet")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	printed := out.String()

	t.Run("v2 token authenticates", func(t *testing.T) {
		m := kubeconfigLine.FindStringSubmatch(printed)
		if m == nil {
			t.Fatal("no --kubeconfig in the printed lines")
		}
		got := postJSON(t, url+"/v2/allocate_k8s_token", extensionBody(t, bmcMachine, ""))
		var join struct {
			APIAddress string `json:"api_address"`
			Token      string `json:"token"`
		}
		if got.status != http.StatusOK || json.Unmarshal(got.body, &join) != nil {
			t.Fatalf("v2 token: %d %q, want 200 and JSON", got.status, got.body)
		}
		client := clientFromKubeconfig(t, m[1])
		status, user, _ := authenticateAt(t, "https://"+join.APIAddress, client, join.Token)
		id, _, _ := strings.Cut(join.Token, ".")
		if (status != http.StatusCreated && status != http.StatusOK) || user != "system:bootstrap:"+id {
			t.Errorf("the token authenticates as %q (status %d), want system:bootstrap:%s", user, status, id)
		}
		if strings.Contains(out.String(), join.Token) {
			t.Error("the token appears in the stack's output")
		}
	})

	t.Run("BMC password stored", func(t *testing.T) {
		password := newPassword(t)
		got := postJSON(t, url+"/v1/bmc_store_password", extensionBody(t, bmcMachine, "p="+password))
		if got.status != http.StatusOK || len(got.body) != 0 {
			t.Fatalf("BMC store: %d %q, want 200 and an empty body", got.status, got.body)
		}
		m := lookupLine.FindStringSubmatch(printed)
		if m == nil {
			t.Fatal("no Datastore lookup line printed")
		}
		query := strings.Trim(m[1], "'")
		resp, err := http.Post(m[2], "application/json", strings.NewReader(query))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		entity, _ := io.ReadAll(resp.Body)
		for _, want := range []string{password, bmcAddress, "DRAC"} {
			if !bytes.Contains(entity, []byte(want)) {
				t.Errorf("the emulator's entity lacks %q: %s", want, entity)
			}
		}
		if strings.Contains(out.String(), password) {
			t.Error("the password appears in the stack's output")
		}
	})

	// Stop it as a service manager or a terminal would: SIGTERM to the
	// command alone.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		stopped = true
		// make, having waited for its job, ends itself with the signal it
		// got; the stack's own exit shows in its last line.
		var exit *exec.ExitError
		if err != nil && !(errors.As(err, &exit) && exit.Sys().(syscall.WaitStatus).Signal() == syscall.SIGTERM) {
			t.Errorf("%s after SIGTERM: %v", name, err)
		}
		if !strings.Contains(out.String(), "devstack: stopped everything and removed") {
			t.Errorf("%s did not say it stopped everything", name)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("%s still running 90 s after SIGTERM", name)
	}
	words := []string{tmp, fmt.Sprintf("127.0.0.1:%d", port)}
	if m := lookupLine.FindStringSubmatch(printed); m != nil { // the emulator's --port
		if _, emuPort, ok := strings.Cut(strings.TrimPrefix(m[2], "http://"), ":"); ok {
			emuPort, _, _ = strings.Cut(emuPort, "/")
			words = append(words, "--port="+emuPort)
		}
	}
	if left := processesMentioning(t, words...); len(left) > 0 {
		t.Errorf("processes left after SIGTERM:\n%s", strings.Join(left, "\n"))
	}
	if entries, _ := os.ReadDir(tmp); len(entries) > 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("left in TMPDIR after SIGTERM: %v", names)
	}
}

// postJSON posts body to url and returns the answer.
func postJSON(t *testing.T, url string, body []byte) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: b}
}

// clientFromKubeconfig returns a client that trusts the CA of the
// kubeconfig the stack wrote (JSON, see PKI.Kubeconfig), without its
// client certificate.
func clientFromKubeconfig(t *testing.T, path string) *http.Client {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Clusters []struct {
			Cluster struct {
				CA []byte `json:"certificate-authority-data"`
			} `json:"cluster"`
		} `json:"clusters"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil || len(cfg.Clusters) == 0 {
		t.Fatalf("kubeconfig %s: %v", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.Clusters[0].Cluster.CA) {
		t.Fatalf("kubeconfig %s: no CA certificate", path)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// processesMentioning returns the command lines of running processes that
// name any of words (a temporary folder, an address), this process and its
// ancestors aside.
func processesMentioning(t *testing.T, words ...string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	var found []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		line := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		for _, w := range words {
			if strings.Contains(line, w) {
				found = append(found, fmt.Sprintf("%d: %s", pid, line))
				break
			}
		}
	}
	return found
}
