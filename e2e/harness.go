// Package e2e tests epoxy-extensions end to end against real components that
// it starts on loopback and owns: etcd, kube-apiserver with the real kubeadm
// and kubectl, the Google Cloud Datastore emulator, and the server binary
// itself. The non-test files are the harness; the _test.go files are the
// cases. `go test -short` skips the whole package; otherwise a missing
// component is a failure, never a skip.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/m-lab/epoxy-extensions/e2e/components"
)

// Process is a program the harness started in its own process group, so
// that stopping it also stops whatever it spawned. The group is killed when
// the test process dies, even without cleanup (Pdeathsig).
type Process struct {
	// Name names the program in errors.
	Name string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // the result of Wait, valid once done is closed
}

// StartProcess starts path with args and env (added to the test process's
// environment), its stdout and stderr going to out.
func StartProcess(name string, out io.Writer, env []string, path string, args ...string) (*Process, error) {
	return startProcess(name, out, append(os.Environ(), env...), path, args...)
}

// startProcess is StartProcess with exactly the environment env.
func startProcess(name string, out io.Writer, env []string, path string, args ...string) (*Process, error) {
	return startProcessFiles(name, out, env, nil, path, args...)
}

// startProcessFiles is startProcess that also passes files to the process
// as fd 3, 4 and so on.
func startProcessFiles(name string, out io.Writer, env []string, files []*os.File, path string, args ...string) (*Process, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.ExtraFiles = files
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// A grandchild that keeps the output pipe open must not block Wait.
	cmd.WaitDelay = 5 * time.Second
	if err := onSpawnThread(cmd.Start); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

var (
	spawnOnce sync.Once
	spawnFns  chan func()
)

// onSpawnThread runs f on one OS thread that lives as long as the test
// process. Linux sends Pdeathsig when the thread that forked a child exits,
// not the process, and Go may end threads (golang.org/issue/27505); children
// forked from this thread die only with the process.
func onSpawnThread(f func() error) error {
	spawnOnce.Do(func() {
		spawnFns = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread stays
			for fn := range spawnFns {
				fn()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnFns <- func() { errc <- f() }
	return <-errc
}

// Pid returns the process id, which is also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed once the process has exited and was reaped.
func (p *Process) Exited() <-chan struct{} { return p.done }

// ExitErr returns how the process ended; only valid once Exited is closed.
func (p *Process) ExitErr() error { return p.err }

// Stop sends SIGTERM to the process group, then SIGKILL after grace, and
// waits until the process is reaped. Members of the group that outlive the
// leader are killed too. Stopping a stopped process does nothing.
func (p *Process) Stop(grace time.Duration) {
	pgid := p.Pid()
	select {
	case <-p.done:
	default:
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
	}
	syscall.Kill(-pgid, syscall.SIGKILL) // stragglers; ESRCH when none
}

// SyncBuffer is a bytes.Buffer safe for one writer and concurrent readers,
// used to capture a program's output while tests read it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Poll calls check every interval until it returns nil, the process p (if
// not nil) exits, or timeout passes; it returns check's last error then.
func Poll(timeout, interval time.Duration, p *Process, check func(ctx context.Context) error) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), interval+time.Second)
		err := check(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if p != nil {
			select {
			case <-p.Exited():
				return fmt.Errorf("%s exited (%v) before it was ready: %w", p.Name, p.ExitErr(), err)
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", timeout, err)
		}
		time.Sleep(interval)
	}
}

// Tail returns the last n lines of the file at path, to explain a failure.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ModuleRoot returns the folder of the server's module,
// github.com/m-lab/epoxy-extensions: the repository's root, which holds
// main.go, the Makefile and the Dockerfile. The end-to-end tests live in a
// module of their own under it, so the go.mod nearest this package is not
// the server's; go list finds the server's through go.work, or through this
// module's replace directive when GOWORK=off.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", serverModule).Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return "", fmt.Errorf("go list -m %s: %w: %s", serverModule, err, strings.TrimSpace(string(exit.Stderr)))
		}
		return "", fmt.Errorf("go list -m %s: %w", serverModule, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("go list -m %s: no folder: not inside the repository", serverModule)
	}
	return dir, nil
}

// serverModule is the module path of the server, whose folder ModuleRoot
// returns.
const serverModule = "github.com/m-lab/epoxy-extensions"

// K8sBinDir returns the folder holding etcd, kube-apiserver, kubeadm and
// kubectl: $K8S_BIN_DIR when set, else the components cache, where they are
// built from the Go module proxy on first use (minutes; progress goes to
// stderr).
func K8sBinDir(ctx context.Context) (string, error) {
	dir := os.Getenv("K8S_BIN_DIR")
	if dir == "" {
		var err error
		if dir, err = components.Ensure(ctx, components.Kubernetes(components.KubernetesVersion), os.Stderr); err != nil {
			return "", err
		}
	}
	for _, tool := range []string{"etcd", "kube-apiserver", "kubeadm", "kubectl"} {
		if err := components.Executable(filepath.Join(dir, tool)); err != nil {
			return "", fmt.Errorf("kubernetes binaries in %s: %w (unset K8S_BIN_DIR to have them built)", dir, err)
		}
	}
	return dir, nil
}
