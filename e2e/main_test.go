package e2e

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// raceEnabled is set by race_test.go when the tests run with -race; the
// server is then built with the race detector too.
var raceEnabled bool

// shared is what TestMain started for every test of the package: one
// control plane and one Datastore emulator. It is nil in -short mode.
var shared *testEnv

type testEnv struct {
	root string // module root
	dir  string // scratch folder, removed at the end
	cp   *ControlPlane
	emu  *Emulator

	buildOnce sync.Once
	binary    string
	buildErr  error
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	if testing.Short() {
		return m.Run() // every test skips itself
	}
	start := time.Now()
	env, err := setup()
	if env != nil {
		defer env.close()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: e2e: a real component is missing or broken (use -short to skip the e2e tests locally):\n%v\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "e2e: control plane at %s, datastore emulator at %s, ready in %s\n",
		env.cp.API.Addr, env.emu.Host, time.Since(start).Round(time.Millisecond))
	shared = env
	return m.Run()
}

// setup checks for every component and starts the shared ones. The control
// plane and the emulator start concurrently: each takes seconds.
func setup() (*testEnv, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	if err := checkPrivateHosts(); err != nil {
		return nil, err
	}
	binDir, err := K8sBinDir(root)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "epoxy-e2e-")
	if err != nil {
		return nil, err
	}
	env := &testEnv{root: root, dir: dir}
	var cpErr, emuErr error
	var wg sync.WaitGroup
	wg.Go(func() { env.cp, cpErr = StartControlPlane(binDir, dir) })
	wg.Go(func() { env.emu, emuErr = StartEmulator(filepath.Join(dir, "datastore-emulator.log")) })
	wg.Wait()
	if err := errors.Join(cpErr, emuErr); err != nil {
		return env, err
	}
	// The test's own Datastore clients talk to the emulator.
	os.Setenv("DATASTORE_EMULATOR_HOST", env.emu.Host)
	return env, nil
}

// checkPrivateHosts makes sure a process can get a private /etc/hosts, as
// the BMC tests need.
func checkPrivateHosts() error {
	f, err := os.CreateTemp("", "e2e-hosts-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	const marker = "192.0.2.1 e2e-private-hosts-check"
	f.WriteString(marker + "\n")
	f.Close()
	out, err := exec.Command("unshare", "-m", "bash", "-c", `mount --bind "$0" /etc/hosts && cat /etc/hosts`, f.Name()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), marker) {
		return fmt.Errorf("cannot give a process a private /etc/hosts with `unshare -m` and `mount --bind` "+
			"(needs root and util-linux's unshare): %v: %s", err, out)
	}
	return nil
}

func (e *testEnv) close() {
	var wg sync.WaitGroup
	if e.cp != nil {
		wg.Go(e.cp.Close)
	}
	if e.emu != nil {
		wg.Go(e.emu.Stop)
	}
	wg.Wait()
	os.RemoveAll(e.dir)
}

// env returns the shared environment, skipping the test in -short mode.
func env(t *testing.T) *testEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: needs etcd, kube-apiserver and the Datastore emulator; skipped with -short")
	}
	if shared == nil {
		t.Fatal("e2e environment was not set up")
	}
	return shared
}

// serverBinary builds the server once per run.
func (e *testEnv) serverBinary(t *testing.T) string {
	t.Helper()
	e.buildOnce.Do(func() {
		e.binary, e.buildErr = BuildServer(e.root, e.dir, raceEnabled)
	})
	if e.buildErr != nil {
		t.Fatalf("building the server: %v", e.buildErr)
	}
	return e.binary
}
