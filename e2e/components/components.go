// Package components provides the real programs that the end-to-end tests
// and the local stack (`make run`) run. Those that M-Lab's machine image
// ships (the Datastore emulator and its Java, kubectl, curl, unshare, a C
// compiler) are checked, with one line per missing one naming its Debian
// package and path. The others (etcd, kube-apiserver, kubeadm, and whatever
// else a Spec names) are built from the Go module proxy in a throwaway
// module, once per version, into a per-user cache, with no root and no
// package manager. It uses only the standard library, so that commands that
// merely check or build components compile in a second.
package components

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Prereq is a program that comes with the machine image.
type Prereq struct {
	// What says what it is for.
	What string
	// Path is where the image has it; a name without a slash is looked up
	// in PATH.
	Path string
	// Package is the Debian package that ships it.
	Package string
}

// The image's programs that the tests and the local stack use.
var (
	Emulator = Prereq{"the Cloud Datastore emulator",
		"/usr/lib/google-cloud-sdk/platform/cloud-datastore-emulator/cloud_datastore_emulator",
		"google-cloud-cli-datastore-emulator"}
	Java    = Prereq{"Java, for the Datastore emulator", "java", "openjdk-17-jre-headless"}
	Kubectl = Prereq{"kubectl", "/usr/bin/kubectl", "kubectl"}
	Unshare = Prereq{"unshare, for private mounts in the in-cluster test", "unshare", "util-linux"}
	CC      = Prereq{"a C compiler, for go test -race", "gcc", "gcc"}
	Curl    = Prereq{"curl, which the ePoxy tests run as M-Lab's machines do", "curl", "curl"}
)

// Find returns the program's full path, or an error that names its Debian
// package and path.
func (p Prereq) Find() (string, error) {
	path := p.Path
	if !strings.Contains(path, "/") {
		found, err := exec.LookPath(path)
		if err != nil {
			return "", fmt.Errorf("missing %s: no %s in PATH (install the Debian package %s)", p.What, path, p.Package)
		}
		path = found
	}
	if err := Executable(path); err != nil {
		return "", fmt.Errorf("missing %s: %v (install the Debian package %s)", p.What, err, p.Package)
	}
	return path, nil
}

// Check returns an error with one line per missing program, or nil.
func Check(prereqs ...Prereq) error {
	var errs []error
	for _, p := range prereqs {
		if _, err := p.Find(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Executable returns an error unless path is an executable regular file
// (after following links).
func Executable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// CacheRoot returns the folder built components are kept in:
// $EPOXY_COMPONENTS_CACHE, else $XDG_CACHE_HOME/epoxy-extensions, else
// ~/.cache/epoxy-extensions.
func CacheRoot() (string, error) {
	if dir := os.Getenv("EPOXY_COMPONENTS_CACHE"); dir != "" {
		return dir, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache folder for components (set EPOXY_COMPONENTS_CACHE): %w", err)
	}
	return filepath.Join(base, "epoxy-extensions"), nil
}

// Spec says how to build one component: some programs of one release,
// built together in a throwaway module.
type Spec struct {
	// Name and Version name the component and its cache folder,
	// CacheRoot()/Name/Version.
	Name, Version string
	// Programs maps each program's file name to the main package it is
	// built from.
	Programs map[string]string
	// Expect is how long the first build takes on 2 cores, for the
	// progress line.
	Expect time.Duration
	// Module returns the throwaway module's go.mod, given a folder to work
	// in. A tools.go beside it imports every program's package (under the
	// tools build tag), so that go mod tidy resolves what they need.
	Module func(ctx context.Context, work string) (gomod string, err error)
	// LDFlags are passed to go build.
	LDFlags string
	// GCFlags, when set, are passed to go build as -gcflags.
	GCFlags string
	// Tags are build tags, to leave out what the tests do not use.
	Tags []string
	// Finish, when set, runs on the built folder before it is put in place,
	// to add what does not come from a build (links to the image's
	// programs).
	Finish func(dir string) error
}

// Ensure returns the folder holding spec's programs, building them first
// when the cache lacks them. It writes one line to progress when a build
// starts, with how long it should take, and one when it ends. Concurrent
// callers, in this process or others, wait for one build.
func Ensure(ctx context.Context, spec Spec, progress io.Writer) (string, error) {
	root, err := CacheRoot()
	if err != nil {
		return "", err
	}
	dest := filepath.Join(root, spec.Name, spec.Version)
	if complete(dest, spec) {
		return dest, nil
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return "", fmt.Errorf("components: %w", err)
	}
	unlock, err := lock(dest + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if complete(dest, spec) { // built by whoever held the lock
		return dest, nil
	}
	start := time.Now()
	fmt.Fprintf(progress, "components: building %s %s (%s) from the Go module proxy into %s: first time only, about %d min on 2 cores\n",
		spec.Name, spec.Version, strings.Join(spec.names(), ", "), dest, int(spec.Expect.Minutes()))
	if err := build(ctx, spec, dest); err != nil {
		return "", fmt.Errorf("components: building %s %s: %w", spec.Name, spec.Version, err)
	}
	fmt.Fprintf(progress, "components: %s %s ready in %s\n", spec.Name, spec.Version, time.Since(start).Round(time.Second))
	return dest, nil
}

// names returns the program names, sorted.
func (s Spec) names() []string {
	var names []string
	for n := range s.Programs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// complete reports whether dir holds every program of spec.
func complete(dir string, spec Spec) bool {
	for name := range spec.Programs {
		if Executable(filepath.Join(dir, name)) != nil {
			return false
		}
	}
	_, err := os.Stat(filepath.Join(dir, ".complete"))
	return err == nil
}

// lock takes an exclusive flock on path, waiting for it.
func lock(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("components: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("components: locking %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// build builds spec's programs into a fresh folder beside dest, then puts it
// in dest's place, so that dest is never half-built.
func build(ctx context.Context, spec Spec, dest string) error {
	work, err := os.MkdirTemp(filepath.Dir(dest), spec.Version+".work-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	gomod, err := spec.Module(ctx, work)
	if err != nil {
		return err
	}
	tools := "//go:build tools\n\npackage tools\n\nimport (\n"
	for _, name := range spec.names() {
		tools += "\t_ \"" + spec.Programs[name] + "\"\n"
	}
	tools += ")\n"
	if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte(gomod), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, "tools.go"), []byte(tools), 0o644); err != nil {
		return err
	}
	if _, err := goCmd(ctx, work, "mod", "tidy"); err != nil {
		return err
	}
	out := filepath.Join(work, "bin")
	if err := os.Mkdir(out, 0o755); err != nil {
		return err
	}
	// One go build for every program: packages they share compile once and
	// the links run side by side.
	args := []string{"build", "-trimpath", "-ldflags", "-s -w " + spec.LDFlags, "-o", out + "/"}
	if spec.GCFlags != "" {
		args = append(args, "-gcflags", spec.GCFlags)
	}
	if len(spec.Tags) > 0 {
		args = append(args, "-tags", strings.Join(spec.Tags, ","))
	}
	byPackage := map[string]string{}
	for _, name := range spec.names() {
		pkg := spec.Programs[name]
		byPackage[pkg] = name
		args = append(args, pkg)
	}
	if _, err := goCmd(ctx, work, args...); err != nil {
		return err
	}
	// go build -o DIR/ names each program after its package path's last
	// element (or the element before a /vN suffix).
	for pkg, name := range byPackage {
		if built := filepath.Join(out, binaryName(pkg)); built != filepath.Join(out, name) {
			if err := os.Rename(built, filepath.Join(out, name)); err != nil {
				return err
			}
		}
	}
	if spec.Finish != nil {
		if err := spec.Finish(out); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(out, ".complete"), nil, 0o644); err != nil {
		return err
	}
	if err := os.RemoveAll(dest); err != nil {
		return err
	}
	return os.Rename(out, dest)
}

// binaryName is the file name go build -o DIR/ gives the program of pkg.
func binaryName(pkg string) string {
	elems := strings.Split(pkg, "/")
	last := elems[len(elems)-1]
	if len(elems) > 1 && len(last) > 1 && last[0] == 'v' && strings.Trim(last[1:], "0123456789") == "" {
		last = elems[len(elems)-2]
	}
	return last
}

// goCmd runs the go command in dir for a throwaway module, returning its
// stdout; its stderr is in the error.
func goCmd(ctx context.Context, dir string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local", "CGO_ENABLED=0", "GOWORK=off")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, tail(stderr.String(), 30))
	}
	return out, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
