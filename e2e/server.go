package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// BuildServer builds the server binary from the module at root into dir and
// returns its path. With race, the binary has the race detector, which makes
// it exit with status 66 at shutdown if it saw a data race.
func BuildServer(root, dir string, race bool) (string, error) {
	bin := filepath.Join(dir, "epoxy-extensions")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %v in %s: %w\n%s", args, root, err, out)
	}
	return bin, nil
}

// ServerOptions says how to run the server under test.
type ServerOptions struct {
	// Binary is the server executable, from BuildServer.
	Binary string
	// Args are its flags; StartServer adds -listen-address.
	Args []string
	// Addr, when set, is the -listen-address ("127.0.0.1:8800", or several
	// separated by commas, the first of which URL names); otherwise the
	// server gets a free loopback port.
	Addr string
	// Output, when set, also receives the server's output as it is written.
	Output io.Writer
	// Env is the server's environment, on top of the few variables
	// serverEnv keeps from the test process's.
	Env []string
	// ServiceAccountDir, when set, is a folder holding token, ca.crt and
	// namespace that the server finds at
	// /var/run/secrets/kubernetes.io/serviceaccount, read-only, as in a pod.
	// It runs in a private mount namespace (unshare -m) where a tmpfs hides
	// the folder /var/run leads to (/run), so that the path can be made
	// without creating anything on the machine; the server sees nothing else
	// of /run. Needs root, or a user namespace (unshare -r) for others.
	ServiceAccountDir string
	// Socket, when set, is a listening TCP socket the test holds, passed
	// to the server as systemd passes its sockets (socket activation):
	// fd 3, LISTEN_FDS=1, LISTEN_FDNAMES=http, and LISTEN_PID the server's
	// own pid. -listen-address names the same address, which the server
	// could not bind again: it must serve the socket it was given. The
	// socket outlives the server, so a server started again on it finds
	// the connections that arrived in between waiting.
	Socket *net.TCPListener
}

// socketActivation runs `sh -c socketActivation PATH ARGS…`: it sets
// LISTEN_PID to the shell's pid, which exec hands on to PATH, as
// sd_listen_fds(3) wants.
const socketActivation = `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http exec "$0" "$@"`

// privateMounts runs in a private mount namespace (unshare -m) as
// `bash -c privateMounts NAME HOSTSFILE SADIR COMMAND ARGS…`: it mounts the
// hosts file over /etc/hosts and the service-account folder at its standard
// path, each when not empty, then execs COMMAND, which keeps bash's pid.
// /var/run is mounted over first: /etc/hosts must not be hidden by it. -n
// keeps mount from writing its bookkeeping (/run/mount/utab) on the machine.
const privateMounts = `set -e
hosts=$1 sa=$2
shift 2
if [ -n "$sa" ]; then
	run=$(readlink -f /var/run)
	mount -n -t tmpfs -o mode=0755,size=1m e2e-run "$run"
	mkdir -p "$run/secrets/kubernetes.io/serviceaccount"
	mount -n --bind -o ro "$sa" "$run/secrets/kubernetes.io/serviceaccount"
fi
if [ -n "$hosts" ]; then
	mount -n --bind "$hosts" /etc/hosts
fi
exec "$@"`

// withPrivateMounts returns the program and arguments that run path with
// args in a private mount namespace holding hostsFile as /etc/hosts and
// saDir as the pod's service-account folder (each when not empty). unshare
// execs bash, which execs path: one process, whose pid is path's. "$@"
// keeps every argument verbatim.
func withPrivateMounts(hostsFile, saDir, path string, args []string) (string, []string) {
	return "unshare", append(append(unshareArgs(), "bash", "-c", privateMounts, "e2e-mounts", hostsFile, saDir, path), args...)
}

// unshareArgs returns the arguments of unshare that give a process a
// private mount namespace: as root, that alone; otherwise also a user
// namespace in which the user is root, which lets it mount there.
func unshareArgs() []string {
	if os.Geteuid() == 0 {
		return []string{"-m"}
	}
	return []string{"-r", "-m"}
}

// Server is a running server under test.
type Server struct {
	// URL is "http://127.0.0.1:PORT".
	URL string

	proc       *Process
	log        *SyncBuffer
	terminated atomic.Bool // Terminate was called
}

// StartServer starts the server on opts.Addr or a free loopback port and
// waits until GET / answers 200. Its stdout and stderr (JSON log lines) are
// kept for Log, and copied to opts.Output when set.
func StartServer(opts ServerOptions) (*Server, error) {
	addr := opts.Addr
	if opts.Socket != nil {
		addr = opts.Socket.Addr().String()
	}
	if addr == "" {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		addr = "127.0.0.1:" + strconv.Itoa(port)
	}
	// The address to reach it at: loopback when it listens on every address.
	first, _, _ := strings.Cut(addr, ",")
	host, port, err := net.SplitHostPort(first)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	args := append([]string{"-listen-address", addr}, opts.Args...)
	path := opts.Binary
	var files []*os.File
	if opts.Socket != nil {
		f, err := opts.Socket.File() // a copy, for the child
		if err != nil {
			return nil, fmt.Errorf("socket for the server: %w", err)
		}
		defer f.Close()
		files = []*os.File{f}
		path, args = "sh", append([]string{"-c", socketActivation, path}, args...)
	}
	if opts.ServiceAccountDir != "" {
		path, args = withPrivateMounts("", opts.ServiceAccountDir, path, args)
	}
	s := &Server{URL: "http://" + net.JoinHostPort(host, port), log: &SyncBuffer{}}
	if err := s.run(opts.Output, serverEnv(opts.Env), files, path, args...); err != nil {
		return nil, err
	}
	return s, nil
}

// run starts the server's process, its output kept for Log and copied to
// output when set, and waits until GET / answers 200. When that fails, or
// the process exits first, it stops the process and says why, with its
// output.
func (s *Server) run(output io.Writer, env []string, files []*os.File, path string, args ...string) error {
	var out io.Writer = s.log
	if output != nil {
		out = io.MultiWriter(s.log, output)
	}
	var err error
	if s.proc, err = startProcessFiles("epoxy-extensions", out, env, files, path, args...); err != nil {
		return err
	}
	err = Poll(30*time.Second, 50*time.Millisecond, s.proc, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, s.URL+"/", "")
	})
	if err != nil {
		s.proc.Stop(5 * time.Second)
		return fmt.Errorf("server: %w\nits output:\n%s", err, s.log.String())
	}
	return nil
}

// WaitReady waits up to timeout, or until ctx ends, for GET /ready to
// answer 200.
func (s *Server) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := httpOK(pctx, http.DefaultClient, s.URL+"/ready", "ready")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server not ready after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.proc.Exited():
			return fmt.Errorf("server exited (%v) before it was ready", s.proc.ExitErr())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Log returns everything the server wrote so far.
func (s *Server) Log() string { return s.log.String() }

// Pid returns the server's process id.
func (s *Server) Pid() int { return s.proc.Pid() }

// Exited is closed once the server has exited.
func (s *Server) Exited() <-chan struct{} { return s.proc.Exited() }

// Terminate sends SIGTERM to the server process alone, as a service manager
// does, and returns at once; Wait tells how it ended.
func (s *Server) Terminate() error {
	s.terminated.Store(true)
	return s.proc.cmd.Process.Signal(syscall.SIGTERM)
}

// Wait waits up to timeout for the server to exit, and returns nil only when
// it exited with status 0.
func (s *Server) Wait(timeout time.Duration) error {
	select {
	case <-s.proc.Exited():
		return s.proc.ExitErr()
	default:
	}
	select {
	case <-s.proc.Exited():
		return s.proc.ExitErr()
	case <-time.After(timeout):
		return fmt.Errorf("server still running after %s", timeout)
	}
}

// Stop sends SIGTERM and waits for the server to drain and exit (SIGKILL
// after grace). It returns nil only when the server exited with status 0 of
// its own accord. After Terminate, it waits for that exit instead.
func (s *Server) Stop(grace time.Duration) error {
	select {
	case <-s.proc.Exited():
		if s.terminated.Load() {
			return s.proc.ExitErr()
		}
		return fmt.Errorf("server had already exited: %v", s.proc.ExitErr())
	default:
	}
	start := time.Now()
	s.proc.Stop(grace)
	if err := s.proc.ExitErr(); err != nil {
		return fmt.Errorf("server exit after SIGTERM (%s): %w", time.Since(start).Round(time.Millisecond), err)
	}
	return nil
}

// serverEnv returns extra plus the test process's PATH, HOME, TMPDIR and
// race-detector settings, and nothing else: the server reads every flag from
// the environment too, so a developer's TOKEN_TTL or ALLOWED_SOURCES must not
// change what the tests run against.
func serverEnv(extra []string) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR", "GORACE"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return append(env, extra...)
}
