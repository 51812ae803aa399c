package command_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/overload"
)

// The real runner must satisfy the interface every backend declares.
var _ command.Runner = command.Exec{}

// maxOutput mirrors the bound in command.go: 64 KiB.
const maxOutput = 64 << 10

func TestExecRunSuccess(t *testing.T) {
	tests := []struct {
		name string
		path string
		args []string
		want string
	}{
		{
			name: "true prints nothing",
			path: "/bin/true",
			want: "",
		},
		{
			name: "stdout is returned verbatim",
			path: "/bin/sh",
			args: []string{"-c", `printf 'kubeadm join 10.0.0.1:6443 \n'`},
			want: "kubeadm join 10.0.0.1:6443 \n",
		},
		{
			name: "stderr of a successful run is not mixed into stdout",
			path: "/bin/sh",
			args: []string{"-c", `echo out; echo err >&2`},
			want: "out\n",
		},
		{
			// No shell between us and the program: arguments arrive
			// as given, unexpanded, including ones that look like flags.
			name: "arguments reach the program unchanged",
			path: "/bin/sh",
			args: []string{"-c", `printf '%s|' "$@"`, "sh", "a b", "$HOME", "*", "--", "-x", ""},
			want: "a b|$HOME|*|--|-x||",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := command.Exec{}.Run(context.Background(), tc.path, tc.args...)
			if err != nil {
				t.Fatalf("Run(%s %q) error = %v, want nil", tc.path, tc.args, err)
			}
			if string(got) != tc.want {
				t.Errorf("Run(%s %q) stdout = %q, want %q", tc.path, tc.args, got, tc.want)
			}
		})
	}
}

func TestExecRunFailure(t *testing.T) {
	tests := []struct {
		name         string
		path         string
		args         []string
		wantExitCode int      // -1: not an *exec.ExitError
		wantIs       error    // if set, errors.Is(err, wantIs) must hold
		wantIn       []string // substrings the error text must contain
		wantNotIn    []string // substrings the error text must not contain
	}{
		{
			name:         "false exits 1",
			path:         "/bin/false",
			wantExitCode: 1,
			wantIn:       []string{"/bin/false", "exit status 1"},
		},
		{
			name:         "exit status and stderr are in the error",
			path:         "/bin/sh",
			args:         []string{"-c", `echo "error: could not reach the API server" >&2; exit 3`},
			wantExitCode: 3,
			wantIn:       []string{"/bin/sh", "exit status 3", "error: could not reach the API server"},
		},
		{
			name:         "a bootstrap token in stderr is redacted",
			path:         "/bin/sh",
			args:         []string{"-c", `echo "kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef" >&2; exit 1`},
			wantExitCode: 1,
			wantIn:       []string{"abcdef.<redacted>", "exit status 1"},
			wantNotIn:    []string{"0123456789abcdef"},
		},
		{
			name: "a certificate key in stderr is redacted",
			path: "/bin/sh",
			args: []string{"-c", `echo "--control-plane --certificate-key ` +
				`d5f1c3b2a4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081" >&2; exit 1`},
			wantExitCode: 1,
			wantIn:       []string{"--certificate-key <redacted>"},
			wantNotIn:    []string{"d5f1c3b2a4e6f809"},
		},
		{
			name:         "a missing binary is an error",
			path:         "/nonexistent/kubeadm",
			wantExitCode: -1,
			wantIs:       fs.ErrNotExist,
			wantIn:       []string{"/nonexistent/kubeadm"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := command.Exec{}.Run(context.Background(), tc.path, tc.args...)
			if err == nil {
				t.Fatalf("Run(%s %q) = %q, nil; want an error", tc.path, tc.args, out)
			}
			var exitErr *exec.ExitError
			switch {
			case tc.wantExitCode < 0 && errors.As(err, &exitErr):
				t.Errorf("Run(%s) error = %v, an exit error; want a start failure", tc.path, err)
			case tc.wantExitCode >= 0 && !errors.As(err, &exitErr):
				t.Errorf("Run(%s) error = %v, want one wrapping *exec.ExitError", tc.path, err)
			case tc.wantExitCode >= 0 && exitErr.ExitCode() != tc.wantExitCode:
				t.Errorf("Run(%s) exit code = %d, want %d", tc.path, exitErr.ExitCode(), tc.wantExitCode)
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("Run(%s) error = %v, want one wrapping %v", tc.path, err, tc.wantIs)
			}
			for _, s := range tc.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Run(%s) error = %q, want it to contain %q", tc.path, err, s)
				}
			}
			for _, s := range tc.wantNotIn {
				if strings.Contains(err.Error(), s) {
					t.Errorf("Run(%s) error = %q, must not contain %q", tc.path, err, s)
				}
			}
		})
	}
}

func TestExecRunBoundsOutput(t *testing.T) {
	t.Run("stdout", func(t *testing.T) {
		out, err := command.Exec{}.Run(context.Background(), "/bin/sh", "-c", "head -c 10000000 /dev/zero")
		if err != nil {
			t.Fatalf("Run(head -c 10000000) error = %v, want nil", err)
		}
		if len(out) != maxOutput {
			t.Errorf("Run(head -c 10000000) returned %d bytes, want %d", len(out), maxOutput)
		}
	})
	t.Run("stderr", func(t *testing.T) {
		_, err := command.Exec{}.Run(context.Background(), "/bin/sh", "-c", "yes error | head -c 10000000 >&2; exit 1")
		if err == nil {
			t.Fatal("Run(10 MB of stderr, exit 1) error = nil, want an error")
		}
		// stderr is quoted with %q, which at most quadruples each byte.
		if n, limit := len(err.Error()), 4*maxOutput+1024; n > limit {
			t.Errorf("Run(10 MB of stderr) error text is %d bytes, want at most %d", n, limit)
		}
		if !strings.Contains(err.Error(), "exit status 1") {
			t.Errorf("Run(10 MB of stderr) error = %.200q…, want it to contain the exit status", err)
		}
	})
}

// TestExecRunKillsProcessGroup runs a shell that starts a grandchild and
// waits for it forever, as a hung kubeadm might, and checks that the deadline
// ends both.
func TestExecRunKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "grandchild.pid")
	const deadline = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()

	start := time.Now()
	_, err := command.Exec{}.Run(ctx, "/bin/sh", "-c", `sleep 600 & echo $! > "$1"; wait`, "sh", pidFile)
	elapsed := time.Since(start)

	// Find the grandchild first, so that it is killed even if Run failed.
	b, readErr := os.ReadFile(pidFile)
	pid, convErr := strconv.Atoi(strings.TrimSpace(string(b)))
	if readErr == nil && convErr == nil && pid > 1 {
		t.Cleanup(func() {
			if running(pid) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
	}

	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run(hung program) error = %v, want one wrapping context.DeadlineExceeded", err)
	}
	// Generous: the kill is immediate, and WaitDelay is 2 s at worst.
	if bound := deadline + 3*time.Second; elapsed > bound {
		t.Errorf("Run(hung program) returned after %v, want within %v", elapsed, bound)
	}
	if readErr != nil || convErr != nil || pid <= 1 {
		t.Fatalf("reading the grandchild's pid from %s: %q, %v, %v", pidFile, b, readErr, convErr)
	}
	t.Logf("Run returned after %v: %v", elapsed, err)
	waitGone(t, pid, 5*time.Second)
}

func TestExecRunTimeout(t *testing.T) {
	tests := []struct {
		name     string
		timeout  time.Duration
		args     []string
		want     string
		wantKill bool
	}{
		{
			name:    "a run that ends in time succeeds",
			timeout: 10 * time.Second,
			args:    []string{"-c", "echo done"},
			want:    "done\n",
		},
		{
			name:     "a run past the timeout is killed without a context deadline",
			timeout:  300 * time.Millisecond,
			args:     []string{"-c", "exec sleep 600"},
			wantKill: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			got, err := command.Exec{Timeout: tc.timeout}.Run(context.Background(), "/bin/sh", tc.args...)
			elapsed := time.Since(start)
			if !tc.wantKill {
				if err != nil || string(got) != tc.want {
					t.Errorf("Run(%q) = %q, %v; want %q, nil", tc.args, got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Run(%q) error = %v, want one wrapping context.DeadlineExceeded", tc.args, err)
			}
			if bound := tc.timeout + 3*time.Second; elapsed > bound {
				t.Errorf("Run(%q) returned after %v, want within %v", tc.args, elapsed, bound)
			}
		})
	}
}

// waitGone fails the test unless pid disappears, or is left only as a zombie
// (dead, waiting for init to reap it), within limit.
func waitGone(t *testing.T, pid int, limit time.Duration) {
	t.Helper()
	stop := time.Now().Add(limit)
	for {
		state, ok := procState(pid)
		if !ok {
			return // gone
		}
		if time.Now().After(stop) {
			if state == "Z" {
				// Killed; reaping is up to pid 1 or a subreaper, not us.
				t.Logf("grandchild %d is a zombie after %v: dead but not yet reaped by init", pid, limit)
				return
			}
			t.Fatalf("grandchild %d still in state %q %v after the deadline, want it killed", pid, state, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procState returns the state letter of pid from /proc/PID/stat, and false if
// there is no such process.
func procState(pid int) (string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", false
	}
	// "PID (COMM) STATE ...": COMM may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+3 > len(s) {
		return "?", true
	}
	return s[i+2 : i+3], true
}

func running(pid int) bool {
	state, ok := procState(pid)
	return ok && state != "Z"
}

// TestExecRunEnv checks that Env reaches the program, on top of the
// server's own environment.
func TestExecRunEnv(t *testing.T) {
	t.Setenv("EPOXY_TEST_INHERITED", "yes")
	out, err := command.Exec{Env: []string{"GOGC=400"}}.Run(context.Background(), "/bin/sh", "-c", `echo "$GOGC $EPOXY_TEST_INHERITED"`)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "400 yes" {
		t.Errorf("program saw %q, want %q", got, "400 yes")
	}
}

// TestKilledErrorIsOverload checks that a run killed at a deadline is
// overload (503), and one whose caller went away is not, while the
// context's own error stays recognisable.
func TestKilledErrorIsOverload(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "deadline", err: context.DeadlineExceeded, want: true},
		{name: "caller gone", err: context.Canceled, want: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := fmt.Errorf("kubectl create: %w", &command.KilledError{Path: "kubectl", Err: tc.err})
			if got := errors.Is(err, overload.Err); got != tc.want {
				t.Errorf("errors.Is(%v, overload.Err) = %t, want %t", err, got, tc.want)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("errors.Is(%v, %v) = false, want true", err, tc.err)
			}
			if errors.Is(err, command.ErrBusy) {
				t.Errorf("errors.Is(%v, command.ErrBusy) = true, want false: a killed run had a slot", err)
			}
		})
	}
}

// The real runner writes to stdin too, and Limited passes it on.
var (
	_ command.InputRunner = command.Exec{}
	_ command.InputRunner = (*command.Limited)(nil)
)

func TestExecRunInput(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 8<<10) // 128 KiB: more than a pipe holds
	tests := []struct {
		name    string
		stdin   []byte
		args    []string
		want    string
		wantErr bool
	}{
		{name: "stdin reaches the program", stdin: []byte("secret body"), args: []string{"-c", "cat"}, want: "secret body"},
		{name: "a body larger than a pipe", stdin: []byte(big), args: []string{"-c", "wc -c"}, want: strconv.Itoa(len(big)) + "\n"},
		{name: "nil stdin is empty", args: []string{"-c", "wc -c"}, want: "0\n"},
		// A program that exits at once unread: its own status counts,
		// not the broken pipe.
		{name: "a program that reads none of it", stdin: []byte(big), args: []string{"-c", "exit 0"}, want: ""},
		{name: "a failure that reads none of it", stdin: []byte(big), args: []string{"-c", "exit 3"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []command.Runner{command.Exec{}, command.NewLimited(command.Exec{}, 1)} {
				got, err := command.RunInput(context.Background(), r, tc.stdin, "/bin/sh", tc.args...)
				if (err != nil) != tc.wantErr {
					t.Fatalf("%T: RunInput() error = %v, want error: %t", r, err, tc.wantErr)
				}
				if !tc.wantErr && strings.TrimLeft(string(got), " ") != tc.want {
					t.Errorf("%T: RunInput() stdout = %q, want %q", r, got, tc.want)
				}
			}
		})
	}
}

// noInput is a Runner that cannot write to stdin.
type noInput struct{ ran bool }

func (n *noInput) Run(context.Context, string, ...string) ([]byte, error) {
	n.ran = true
	return nil, nil
}

func TestRunInputWithoutInputRunner(t *testing.T) {
	for _, wrap := range []bool{false, true} {
		n := &noInput{}
		var r command.Runner = n
		if wrap {
			r = command.NewLimited(n, 1)
		}
		_, err := command.RunInput(context.Background(), r, []byte("x"), "/bin/cat")
		if !errors.Is(err, command.ErrNoInput) || n.ran {
			t.Errorf("%T: RunInput() error = %v, ran: %t, want ErrNoInput and no run", r, err, n.ran)
		}
	}
}
