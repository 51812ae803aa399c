// Package command runs the external programs the backends drive (kubeadm,
// kubectl) with a deadline, bounded output and no shell.
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/m-lab/epoxy-extensions/overload"
	"github.com/m-lab/epoxy-extensions/redact"
)

// maxOutput bounds what is kept of a program's stdout and stderr. A join
// command is about 200 bytes; anything past this is noise or an attack.
const maxOutput = 64 << 10

// waitDelay is how long Run waits for the output pipes to close after the
// program was killed, in case a grandchild still holds them.
const waitDelay = 2 * time.Second

// Runner runs a program and returns its stdout: the one interface through
// which token/ and node/ run kubeadm and kubectl. Exec and Limited
// implement it.
type Runner interface {
	Run(ctx context.Context, path string, args ...string) ([]byte, error)
}

// InputRunner is a Runner that can also write to a program's stdin, the
// way to hand a program a secret that must reach neither its command line
// nor a file a killed server would leave behind. Exec implements it, and
// Limited does over a Runner that does.
type InputRunner interface {
	// RunInput is Run with stdin written to the program's standard
	// input, which is closed after it.
	RunInput(ctx context.Context, stdin []byte, path string, args ...string) ([]byte, error)
}

// RunInput runs path with args through r, stdin on its standard input; it
// fails without running anything when r is no InputRunner.
func RunInput(ctx context.Context, r Runner, stdin []byte, path string, args ...string) ([]byte, error) {
	ir, ok := r.(InputRunner)
	if !ok {
		return nil, fmt.Errorf("%s: %w: %T", path, ErrNoInput, r)
	}
	return ir.RunInput(ctx, stdin, path, args...)
}

// ErrNoInput means a program needed its stdin fed by a Runner that cannot.
var ErrNoInput = errors.New("the runner cannot write to a program's stdin")

// Exec runs programs as direct child processes. The zero value is ready to use.
type Exec struct {
	// Timeout, when positive, bounds each run on top of the context's own
	// deadline.
	Timeout time.Duration
	// Env is added to the server's own environment for each run, e.g.
	// GOGC=400: kubectl is a Go program that exits within a second, whose
	// start-up spends about a quarter of its CPU in garbage collection.
	Env []string
}

// Run starts path with args, waits for it to exit, and returns its stdout,
// also when it failed.
// The program and everything it starts run in their own process group, which
// is killed when ctx ends, so a hung kubeadm never outlives its request. The
// error for a failed run carries the exit status and the program's stderr,
// with secrets removed.
func (e Exec) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	return e.RunInput(ctx, nil, path, args...)
}

// RunInput is Run with stdin on the program's standard input (none when
// nil): it goes through a pipe, never a file.
func (e Exec) RunInput(ctx context.Context, stdin []byte, path string, args ...string) ([]byte, error) {
	if e.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.Timeout)
		defer cancel()
	}
	var stdout, stderr limitedBuffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if len(e.Env) > 0 {
		cmd.Env = append(os.Environ(), e.Env...)
	}
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error {
		// A negative pid signals the whole process group.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = waitDelay
	err := cmd.Run()
	if err == nil {
		return stdout.Bytes(), nil
	}
	// What a failed run printed comes back too: a program that acts on
	// several objects (kubectl create -f) names those it did.
	if ctxErr := ctx.Err(); ctxErr != nil {
		return stdout.Bytes(), &KilledError{Path: path, Err: ctxErr}
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return stdout.Bytes(), &ExitError{Path: path, Err: err, Stderr: redact.String(stderr.String())}
	}
	return nil, fmt.Errorf("%s: %w", path, err)
}

// ExitError is a run that exited with a failure status.
type ExitError struct {
	// Path is the program that failed.
	Path string
	// Err is the *exec.ExitError.
	Err error
	// Stderr is what the program printed on stderr, secrets removed.
	Stderr string
}

func (e *ExitError) Error() string { return fmt.Sprintf("%s: %v: stderr: %q", e.Path, e.Err, e.Stderr) }

// Unwrap returns Err.
func (e *ExitError) Unwrap() error { return e.Err }

// KilledError is a run killed because its context ended: at its deadline
// (the run's own -command-timeout or the request's), or because the caller
// went away (context.Canceled).
type KilledError struct {
	// Path is the program that was killed.
	Path string
	// Err is the context's error: context.DeadlineExceeded or
	// context.Canceled.
	Err error
}

func (e *KilledError) Error() string { return fmt.Sprintf("%s killed: %v", e.Path, e.Err) }

// Unwrap makes errors.Is(err, context.DeadlineExceeded) (or Canceled) true.
func (e *KilledError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, overload.Err) true for a run killed at a
// deadline: the program (or what it waited for, the API server) could not
// finish in time, which the handler answers with 503 and Retry-After, as it
// does a run that got no slot. A caller that went away is no overload.
func (e *KilledError) Is(target error) bool {
	return target == overload.Err && errors.Is(e.Err, context.DeadlineExceeded)
}

// Executable returns an error unless every named program in dir is a regular
// file that this process's user may execute.
func Executable(dir string, names ...string) error {
	for _, n := range names {
		p := filepath.Join(dir, n)
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable file", p)
		}
		if err := syscall.Access(p, 1); err != nil { // X_OK, for this user
			return fmt.Errorf("%s is not executable by uid %d: %w", p, os.Getuid(), err)
		}
	}
	return nil
}

// limitedBuffer keeps the first maxOutput bytes written to it and drops the
// rest, so a runaway program cannot grow the server's memory.
type limitedBuffer struct {
	buf bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte  { return b.buf.Bytes() }
func (b *limitedBuffer) String() string { return b.buf.String() }
