package node_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/node"
)

var (
	_ command.Runner = command.Exec{}
	_ command.Runner = (*fakeRunner)(nil)
)

// fakeRunner records each run and returns err.
type fakeRunner struct {
	err   error
	calls []call
}

type call struct {
	path string
	args []string
}

func (f *fakeRunner) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, call{path: path, args: slices.Clone(args)})
	if f.err != nil {
		return nil, f.err
	}
	return []byte(`node "x" deleted`), nil
}

func TestKubectlDelete(t *testing.T) {
	errRun := errors.New("/usr/bin/kubectl: exit status 1: stderr: \"error: the server doesn't have a resource type\"")
	tests := []struct {
		name       string
		kubeconfig string
		binDir     string
		node       string
		runErr     error
		wantArgs   []string
		wantErrIs  error
	}{
		{
			name:     "no kubeconfig",
			binDir:   "/usr/bin",
			node:     "mlab1-lga01.mlab-oti.measurement-lab.org",
			wantArgs: []string{"delete", "node", "--ignore-not-found", "--", "mlab1-lga01.mlab-oti.measurement-lab.org"},
		},
		{
			name:       "kubeconfig comes first",
			kubeconfig: "/etc/kubernetes/admin.conf",
			binDir:     "/opt/k8s/bin",
			node:       "mlab1-lga01.mlab-oti.measurement-lab.org-d9h6",
			wantArgs: []string{"--kubeconfig", "/etc/kubernetes/admin.conf",
				"delete", "node", "--ignore-not-found", "--", "mlab1-lga01.mlab-oti.measurement-lab.org-d9h6"},
		},
		{
			name:      "runner failure is wrapped",
			binDir:    "/usr/bin",
			node:      "mlab1-lga01.mlab-oti.measurement-lab.org",
			runErr:    errRun,
			wantArgs:  []string{"delete", "node", "--ignore-not-found", "--", "mlab1-lga01.mlab-oti.measurement-lab.org"},
			wantErrIs: errRun,
		},
		{
			name:      "runner deadline is wrapped",
			binDir:    "/usr/bin",
			node:      "mlab1-lga01.mlab-oti.measurement-lab.org",
			runErr:    context.DeadlineExceeded,
			wantArgs:  []string{"delete", "node", "--ignore-not-found", "--", "mlab1-lga01.mlab-oti.measurement-lab.org"},
			wantErrIs: context.DeadlineExceeded,
		},
		// Names kubectl would read as flags: refused before kubectl runs.
		{name: "empty name", binDir: "/usr/bin", node: "", wantErrIs: node.ErrInvalidName},
		{name: "--all", binDir: "/usr/bin", node: "--all", wantErrIs: node.ErrInvalidName},
		{name: "-A", binDir: "/usr/bin", node: "-A", wantErrIs: node.ErrInvalidName},
		{name: "-lfoo=bar", binDir: "/usr/bin", node: "-lfoo=bar", wantErrIs: node.ErrInvalidName},
		{name: "--all with kubeconfig", kubeconfig: "/k", binDir: "/usr/bin", node: "--all", wantErrIs: node.ErrInvalidName},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakeRunner{err: tc.runErr}
			k := &node.Kubectl{Runner: r, BinDir: tc.binDir, Kubeconfig: tc.kubeconfig}

			err := k.Delete(context.Background(), tc.node)

			if tc.wantErrIs != nil {
				if !errors.Is(err, tc.wantErrIs) {
					t.Errorf("Delete(%q) error = %v, want one wrapping %v", tc.node, err, tc.wantErrIs)
				}
			} else if err != nil {
				t.Errorf("Delete(%q) error = %v, want nil", tc.node, err)
			}
			if tc.wantArgs == nil {
				if len(r.calls) != 0 {
					t.Fatalf("Delete(%q) ran kubectl %q, want it never run", tc.node, r.calls)
				}
				return
			}
			if len(r.calls) != 1 {
				t.Fatalf("Delete(%q) ran kubectl %d times, want once", tc.node, len(r.calls))
			}
			if want := filepath.Join(tc.binDir, "kubectl"); r.calls[0].path != want {
				t.Errorf("Delete(%q) ran %q, want %q", tc.node, r.calls[0].path, want)
			}
			if !slices.Equal(r.calls[0].args, tc.wantArgs) {
				t.Errorf("Delete(%q) ran kubectl with args\n%q\nwant\n%q", tc.node, r.calls[0].args, tc.wantArgs)
			}
		})
	}
}

// TestKubectlDeleteRealProgram runs a stand-in kubectl that records its argv,
// to show that "--" and the name reach a real process as separate arguments.
func TestKubectlDeleteRealProgram(t *testing.T) {
	tests := []struct {
		name       string
		kubeconfig string
		node       string
		exit       int
		wantArgv   []string
		wantErr    bool
	}{
		{
			name:       "kubeconfig and name",
			kubeconfig: "/etc/kubernetes/admin.conf",
			node:       "mlab1-lga01.mlab-oti.measurement-lab.org-d9h6",
			wantArgv: []string{"--kubeconfig", "/etc/kubernetes/admin.conf",
				"delete", "node", "--ignore-not-found", "--", "mlab1-lga01.mlab-oti.measurement-lab.org-d9h6"},
		},
		{
			name:     "no kubeconfig",
			node:     "mlab4-abc0t.mlab-sandbox.measurement-lab.org",
			wantArgv: []string{"delete", "node", "--ignore-not-found", "--", "mlab4-abc0t.mlab-sandbox.measurement-lab.org"},
		},
		{
			name:     "kubectl failing",
			node:     "mlab1-lga01.mlab-oti.measurement-lab.org",
			exit:     1,
			wantArgv: []string{"delete", "node", "--ignore-not-found", "--", "mlab1-lga01.mlab-oti.measurement-lab.org"},
			wantErr:  true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			argvFile := filepath.Join(dir, "argv")
			writeKubectl(t, dir, argvFile, tc.exit)
			k := &node.Kubectl{Runner: command.Exec{}, BinDir: dir, Kubeconfig: tc.kubeconfig}

			err := k.Delete(context.Background(), tc.node)

			if gotErr := err != nil; gotErr != tc.wantErr {
				t.Errorf("Delete(%q) error = %v, want error: %t", tc.node, err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "nodes is forbidden") {
				t.Errorf("Delete(%q) error = %q, want it to carry kubectl's stderr", tc.node, err)
			}
			b, readErr := os.ReadFile(argvFile)
			if readErr != nil {
				t.Fatalf("the stand-in kubectl left no argv: %v", readErr)
			}
			got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if !slices.Equal(got, tc.wantArgv) {
				t.Errorf("kubectl received argv\n%q\nwant\n%q", got, tc.wantArgv)
			}
		})
	}
}

// writeKubectl writes an executable dir/kubectl that writes its arguments
// one per line to argvFile, prints to stderr when failing, and exits exit.
func writeKubectl(t *testing.T, dir, argvFile string, exit int) {
	t.Helper()
	if strings.Contains(argvFile, "'") {
		t.Fatalf("temp path %q holds a quote", argvFile)
	}
	script := "#!/bin/sh\n" +
		"for a in \"$@\"; do printf '%s\\n' \"$a\"; done > '" + argvFile + "'\n"
	if exit != 0 {
		script += "echo 'Error from server (Forbidden): nodes is forbidden' >&2\n"
	}
	script += "exit " + strconv.Itoa(exit) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kubectl"), []byte(script), 0o755); err != nil {
		t.Fatalf("writing the stand-in kubectl: %v", err)
	}
}
