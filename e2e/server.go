package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
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
	// Env is added to the test process's environment.
	Env []string
	// HostsFile, when set, is the server's /etc/hosts: it runs in a private
	// mount namespace (unshare -m) where the file is bind-mounted over
	// /etc/hosts. The machine's own /etc/hosts is untouched. Needs root.
	HostsFile string
}

// Server is a running server under test.
type Server struct {
	// URL is "http://127.0.0.1:PORT".
	URL string

	proc *Process
	log  *SyncBuffer
}

// StartServer starts the server on a free loopback port and waits until
// GET / answers 200. Its stdout and stderr (JSON log lines) are kept for Log.
func StartServer(opts ServerOptions) (*Server, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := append([]string{"-listen-address", addr}, opts.Args...)
	path := opts.Binary
	if opts.HostsFile != "" {
		// unshare execs bash, which execs the server: one process, whose pid
		// is the server's. "$0" and "$@" keep every argument verbatim.
		script := `mount --bind "$0" /etc/hosts && exec "$@"`
		args = append([]string{"-m", "bash", "-c", script, opts.HostsFile, path}, args...)
		path = "unshare"
	}
	s := &Server{URL: "http://" + addr, log: &SyncBuffer{}}
	if s.proc, err = StartProcess("epoxy-extensions", s.log, opts.Env, path, args...); err != nil {
		return nil, err
	}
	err = Poll(30*time.Second, 50*time.Millisecond, s.proc, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, s.URL+"/", "")
	})
	if err != nil {
		s.proc.Stop(5 * time.Second)
		return nil, fmt.Errorf("server: %w\nits output:\n%s", err, s.log.String())
	}
	return s, nil
}

// Log returns everything the server wrote so far.
func (s *Server) Log() string { return s.log.String() }

// Pid returns the server's process id.
func (s *Server) Pid() int { return s.proc.Pid() }

// Stop sends SIGTERM and waits for the server to drain and exit (SIGKILL
// after grace). It returns nil only when the server exited with status 0 of
// its own accord.
func (s *Server) Stop(grace time.Duration) error {
	select {
	case <-s.proc.Exited():
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
