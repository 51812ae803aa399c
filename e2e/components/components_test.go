package components

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		prereqs   []Prereq
		wantLines []string // each a line of the error; none means no error
	}{
		{"present by path", []Prereq{{"a tool", exe, "tool-pkg"}}, nil},
		{"present in PATH", []Prereq{{"a shell", "sh", "dash"}}, nil},
		{"missing path names package and path", []Prereq{{"the emulator", filepath.Join(dir, "nope"), "emu-pkg"}},
			[]string{"missing the emulator: stat " + filepath.Join(dir, "nope") + ": no such file or directory (install the Debian package emu-pkg)"}},
		{"not executable", []Prereq{{"a tool", plain, "tool-pkg"}},
			[]string{"missing a tool: " + plain + " is not an executable file (install the Debian package tool-pkg)"}},
		{"missing from PATH", []Prereq{{"java", "no-such-program-xyz", "openjdk-17-jre-headless"}},
			[]string{"missing java: no no-such-program-xyz in PATH (install the Debian package openjdk-17-jre-headless)"}},
		{"one line each", []Prereq{{"a", "no-such-a", "pa"}, {"b", exe, "pb"}, {"c", "no-such-c", "pc"}},
			[]string{"missing a: no no-such-a in PATH (install the Debian package pa)", "missing c: no no-such-c in PATH (install the Debian package pc)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.prereqs...)
			if len(tc.wantLines) == 0 {
				if err != nil {
					t.Errorf("Check() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check() = nil, want an error")
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "|") != strings.Join(tc.wantLines, "|") {
				t.Errorf("Check() lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.wantLines, "\n"))
			}
		})
	}
}

func TestBinaryName(t *testing.T) {
	for pkg, want := range map[string]string{
		"k8s.io/kubernetes/cmd/kube-apiserver":          "kube-apiserver",
		"go.etcd.io/etcd/server/v3":                     "server",
		"github.com/prometheus/prometheus/cmd/promtool": "promtool",
		"honnef.co/go/tools/cmd/staticcheck":            "staticcheck",
		"example.org/v2tool":                            "v2tool",
	} {
		if got := binaryName(pkg); got != want {
			t.Errorf("binaryName(%q) = %q, want %q", pkg, got, want)
		}
	}
}

func TestKubernetesGoMod(t *testing.T) {
	modfile := []byte("module k8s.io/kubernetes\n\ngo 1.24.0\n\nrequire (\n\tgo.etcd.io/etcd/client/v3 v3.6.4\n\tk8s.io/api v0.0.0\n)\n\nrequire (\n\tk8s.io/kubelet v0.0.0\n\tk8s.io/utils v0.0.0-2025\n)\n")
	got, err := kubernetesGoMod(modfile, "v1.34.4")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"go 1.24.0", "k8s.io/kubernetes v1.34.4", "go.etcd.io/etcd/server/v3 v3.6.4",
		"k8s.io/api => k8s.io/api v0.34.4", "k8s.io/kubelet => k8s.io/kubelet v0.34.4",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("go.mod lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "k8s.io/utils =>") {
		t.Errorf("go.mod replaces a module that is not a staging module:\n%s", got)
	}
	if _, err := kubernetesGoMod([]byte("module x\n"), "v1.34.4"); err == nil {
		t.Error("kubernetesGoMod accepted a go.mod without etcd or staging modules")
	}
}

// TestEnsure builds a small real program through Ensure, then checks that a
// second call takes it from the cache without building again.
func TestEnsure(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program with the go command")
	}
	cache := t.TempDir()
	t.Setenv("EPOXY_COMPONENTS_CACHE", cache)
	builds := 0
	spec := Spec{
		Name: "tiny", Version: "v1",
		// gofmt comes with Go: the build needs no download.
		Programs: map[string]string{"gofmt-copy": "cmd/gofmt"},
		Expect:   time.Minute,
		Tags:     []string{"netgo", "osusergo"},
		Module: func(context.Context, string) (string, error) {
			builds++
			return "module components/tiny\n\ngo 1.26\n", nil
		},
	}
	var progress strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir, err := Ensure(ctx, spec, &progress)
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(cache, "tiny", "v1") {
		t.Errorf("Ensure() = %s, want the cache folder", dir)
	}
	if err := Executable(filepath.Join(dir, "gofmt-copy")); err != nil {
		t.Error(err)
	}
	if !strings.Contains(progress.String(), "components: building tiny v1 (gofmt-copy)") || !strings.Contains(progress.String(), "components: tiny v1 ready in") {
		t.Errorf("progress = %q, want a line when the build starts and one when it ends", progress.String())
	}
	if _, err := Ensure(ctx, spec, io.Discard); err != nil || builds != 1 {
		t.Errorf("second Ensure: %v, %d builds; want the cache and 1 build", err, builds)
	}
}
