package node_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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

// fakeRunner records each run and answers run i (from 0) with outputs[i]
// (nothing when there is no such entry), or with err.
type fakeRunner struct {
	err     error
	outputs []string
	calls   []call
}

type call struct {
	path string
	args []string
}

func (f *fakeRunner) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	i := len(f.calls)
	f.calls = append(f.calls, call{path: path, args: slices.Clone(args)})
	if f.err != nil {
		return nil, f.err
	}
	if i < len(f.outputs) {
		return []byte(f.outputs[i]), nil
	}
	return nil, nil
}

// ownArgs is the read of a Node that comes first for a direct caller.
func ownArgs(name string) []string {
	return []string{"get", "nodes", "--field-selector", "metadata.name=" + name, "--output", "go-template=" +
		`{{range .items}}{{.metadata.name}}{{"\x1f"}}{{range $k, $v := .metadata.labels}}{{if eq $k "node-role.kubernetes.io/control-plane"}}cp{{end}}{{end}}{{"\x1f"}}{{range .status.addresses}}{{.address}},{{end}}{{"\x1e"}}{{end}}`}
}

// deleteArgs and getArgs are the kubectl arguments Kubectl.Delete runs for
// name: the delete of a Node without the control-plane label, then, when
// that deleted nothing, the look-up of a control-plane Node of that name.
func deleteArgs(name string) []string {
	return []string{"delete", "node", "--selector", "!node-role.kubernetes.io/control-plane", "--field-selector", "metadata.name=" + name}
}

func getArgs(name string) []string {
	return []string{"get", "node", "--selector", "node-role.kubernetes.io/control-plane", "--field-selector", "metadata.name=" + name, "--output", "name"}
}

func TestKubectlDelete(t *testing.T) {
	errRun := errors.New("/usr/bin/kubectl: exit status 1: stderr: \"error: the server doesn't have a resource type\"")
	const name = "mlab1-lga01.mlab-oti.measurement-lab.org"
	const vm = "mlab1-lga01.mlab-oti.measurement-lab.org-d9h6"
	deleted := `node "` + name + `" deleted`
	tests := []struct {
		name       string
		kubeconfig string
		binDir     string
		node       string
		owner      netip.Addr
		outputs    []string
		runErr     error
		wantCalls  [][]string
		wantErrIs  error
	}{
		{
			name:      "deleted in one run",
			binDir:    "/usr/bin",
			node:      name,
			outputs:   []string{deleted},
			wantCalls: [][]string{deleteArgs(name)},
		},
		{
			name:       "kubeconfig comes first",
			kubeconfig: "/etc/kubernetes/admin.conf",
			binDir:     "/opt/k8s/bin",
			node:       vm,
			outputs:    []string{`node "` + vm + `" deleted`},
			wantCalls:  [][]string{append([]string{"--kubeconfig", "/etc/kubernetes/admin.conf"}, deleteArgs(vm)...)},
		},
		{
			name:      "missing node counts as deleted",
			binDir:    "/usr/bin",
			node:      name,
			outputs:   []string{"", ""},
			wantCalls: [][]string{deleteArgs(name), getArgs(name)},
		},
		{
			name:      "control-plane node is refused",
			binDir:    "/usr/bin",
			node:      name,
			outputs:   []string{"", "node/" + name + "\n"},
			wantCalls: [][]string{deleteArgs(name), getArgs(name)},
			wantErrIs: node.ErrControlPlane,
		},
		{
			name:      "runner failure is wrapped",
			binDir:    "/usr/bin",
			node:      name,
			runErr:    errRun,
			wantCalls: [][]string{deleteArgs(name)},
			wantErrIs: errRun,
		},
		{
			name:      "runner deadline is wrapped",
			binDir:    "/usr/bin",
			node:      name,
			runErr:    context.DeadlineExceeded,
			wantCalls: [][]string{deleteArgs(name)},
			wantErrIs: context.DeadlineExceeded,
		},
		{
			name:      "direct caller deletes its own node",
			binDir:    "/usr/bin",
			node:      vm,
			owner:     netip.MustParseAddr("10.128.0.7"),
			outputs:   []string{vm + "\x1f\x1f10.128.0.7,34.1.2.3,\x1e", `node "` + vm + `" deleted`},
			wantCalls: [][]string{ownArgs(vm), deleteArgs(vm)},
		},
		{
			name:      "direct caller, another's node",
			binDir:    "/usr/bin",
			node:      vm,
			owner:     netip.MustParseAddr("10.128.0.8"),
			outputs:   []string{vm + "\x1f\x1f10.128.0.7,34.1.2.3,\x1e"},
			wantCalls: [][]string{ownArgs(vm)},
			wantErrIs: node.ErrNotOwnNode,
		},
		{
			name:      "direct caller, control-plane node",
			binDir:    "/usr/bin",
			node:      vm,
			owner:     netip.MustParseAddr("10.128.0.7"),
			outputs:   []string{vm + "\x1fcp\x1f10.128.0.7,\x1e"},
			wantCalls: [][]string{ownArgs(vm)},
			wantErrIs: node.ErrControlPlane,
		},
		{
			name:      "direct caller, missing node",
			binDir:    "/usr/bin",
			node:      vm,
			owner:     netip.MustParseAddr("10.128.0.7"),
			outputs:   []string{""},
			wantCalls: [][]string{ownArgs(vm)},
		},
		// Names kubectl would read as flags or as selectors: refused before
		// kubectl runs.
		{name: "empty name", binDir: "/usr/bin", node: "", wantErrIs: node.ErrInvalidName},
		{name: "--all", binDir: "/usr/bin", node: "--all", wantErrIs: node.ErrInvalidName},
		{name: "-A", binDir: "/usr/bin", node: "-A", wantErrIs: node.ErrInvalidName},
		{name: "-lfoo=bar", binDir: "/usr/bin", node: "-lfoo=bar", wantErrIs: node.ErrInvalidName},
		{name: "selector injection", binDir: "/usr/bin", node: "a,metadata.name!=b", wantErrIs: node.ErrInvalidName},
		{name: "--all with kubeconfig", kubeconfig: "/k", binDir: "/usr/bin", node: "--all", wantErrIs: node.ErrInvalidName},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakeRunner{err: tc.runErr, outputs: tc.outputs}
			k := &node.Kubectl{Runner: r, BinDir: tc.binDir, Kubeconfig: tc.kubeconfig}

			err := k.Delete(context.Background(), tc.node, tc.owner)

			if tc.wantErrIs != nil {
				if !errors.Is(err, tc.wantErrIs) {
					t.Errorf("Delete(%q) error = %v, want one wrapping %v", tc.node, err, tc.wantErrIs)
				}
			} else if err != nil {
				t.Errorf("Delete(%q) error = %v, want nil", tc.node, err)
			}
			if len(r.calls) != len(tc.wantCalls) {
				t.Fatalf("Delete(%q) ran kubectl %d times (%q), want %d", tc.node, len(r.calls), r.calls, len(tc.wantCalls))
			}
			for i, c := range r.calls {
				if want := filepath.Join(tc.binDir, "kubectl"); c.path != want {
					t.Errorf("Delete(%q) ran %q, want %q", tc.node, c.path, want)
				}
				if !slices.Equal(c.args, tc.wantCalls[i]) {
					t.Errorf("Delete(%q) run %d: kubectl args\n%q\nwant\n%q", tc.node, i, c.args, tc.wantCalls[i])
				}
			}
		})
	}
}

// TestRefusalReasons: the handler maps these errors to 403 by their
// RefusalReason method, without importing this package.
func TestRefusalReasons(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{node.ErrControlPlane, "control_plane_node"},
		{node.ErrNotOwnNode, "not_own_node"},
	} {
		var f interface{ RefusalReason() string }
		if err := fmt.Errorf("node x: %w", tc.err); !errors.As(err, &f) || f.RefusalReason() != tc.want {
			t.Errorf("%v: no RefusalReason method saying %q", tc.err, tc.want)
		}
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
			wantArgv: append([]string{"--kubeconfig", "/etc/kubernetes/admin.conf"},
				deleteArgs("mlab1-lga01.mlab-oti.measurement-lab.org-d9h6")...),
		},
		{
			name:     "no kubeconfig",
			node:     "mlab4-abc0t.mlab-sandbox.measurement-lab.org",
			wantArgv: deleteArgs("mlab4-abc0t.mlab-sandbox.measurement-lab.org"),
		},
		{
			name:     "kubectl failing",
			node:     "mlab1-lga01.mlab-oti.measurement-lab.org",
			exit:     1,
			wantArgv: deleteArgs("mlab1-lga01.mlab-oti.measurement-lab.org"),
			wantErr:  true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			argvFile := filepath.Join(dir, "argv")
			writeKubectl(t, dir, argvFile, tc.exit)
			k := &node.Kubectl{Runner: command.Exec{}, BinDir: dir, Kubeconfig: tc.kubeconfig}

			err := k.Delete(context.Background(), tc.node, netip.Addr{})

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
// one per line to argvFile, says it deleted a node, prints to stderr when
// failing, and exits exit.
func writeKubectl(t *testing.T, dir, argvFile string, exit int) {
	t.Helper()
	if strings.Contains(argvFile, "'") {
		t.Fatalf("temp path %q holds a quote", argvFile)
	}
	script := "#!/bin/sh\n" +
		"for a in \"$@\"; do printf '%s\\n' \"$a\"; done > '" + argvFile + "'\n"
	if exit != 0 {
		script += "echo 'Error from server (Forbidden): nodes is forbidden' >&2\n"
	} else {
		script += "echo 'node \"x\" deleted'\n"
	}
	script += "exit " + strconv.Itoa(exit) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kubectl"), []byte(script), 0o755); err != nil {
		t.Fatalf("writing the stand-in kubectl: %v", err)
	}
}
