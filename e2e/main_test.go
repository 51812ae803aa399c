package e2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/e2e/components"
)

// raceEnabled is set by race_test.go when the tests run with -race; the
// server is then built with the race detector too.
var raceEnabled bool

// shared is what the first test that needs it started for every test of
// the package: one control plane and one Datastore emulator. Setting it up
// lazily means that `go test -list`, -short, and runs of tests that need no
// component never wait for one.
var shared struct {
	once sync.Once
	env  *testEnv
	err  error
}

type testEnv struct {
	root string // module root
	dir  string // scratch folder, removed at the end
	cp   *ControlPlane
	emu  *Emulator

	buildOnce sync.Once
	binary    string
	buildErr  error
}

// defaultParallel is how many of this package's tests run at once unless
// -parallel says otherwise. Most of them wait (for deadlines, TTLs, a
// scrape, a restart) far more than they compute, so more than GOMAXPROCS:
// 12, plus one for each of the seven storms (alone), which holds its slot while it waits
// for stormLock, so that waiting storms do not shrink the 12.
const defaultParallel = 12 + 7

func TestMain(m *testing.M) {
	flag.Parse()
	parallelSet := false
	flag.Visit(func(f *flag.Flag) { parallelSet = parallelSet || f.Name == "test.parallel" })
	if !parallelSet {
		flag.Set("test.parallel", strconv.Itoa(defaultParallel))
	}
	status := m.Run()
	if sharedEPoxy.ep != nil {
		sharedEPoxy.ep.Stop()
	}
	if shared.env != nil {
		shared.env.close()
	}
	os.Exit(status)
}

// The package's tests run side by side (t.Parallel), in three kinds; every
// test starts by saying which it is:
//   - alone: a storm (hundreds of machines, every CPU busy);
//   - parallel: a test with deadlines to meet, which a storm could make it
//     miss;
//   - waiting: a test that mostly waits (for a TTL, a scrape, an outage)
//     with deadlines far from what it needs.
//
// stormLock keeps storms apart from each other and from the parallel tests:
// a storm holds it alone, parallel tests share it, waiting tests never take
// it. Unlike sync.RWMutex it prefers readers: a storm waits until no
// parallel test runs, and parallel tests do not wait for a storm that waits.
// The parallel tests so run together first and the storms one after
// another once they are done, rather than each storm waiting for the
// longest parallel test then running while new ones wait, which left the
// CPUs idle for minutes.
var stormLock = newGate()

// alone runs t, a storm, beside waiting tests only.
func alone(t *testing.T) {
	t.Helper()
	t.Parallel()
	stormAlone(t)
}

// stormAlone makes the rest of t, until then a waiting test, a storm: one
// that prepares (registers machines, say) beside every other test, then
// loads the CPUs alone.
func stormAlone(t *testing.T) {
	t.Helper()
	stormLock.Lock()
	t.Cleanup(stormLock.Unlock)
}

// parallel runs t beside the other parallel and waiting tests, never during
// a storm. Its parallel subtests call parallel themselves.
func parallel(t *testing.T) {
	t.Helper()
	t.Parallel()
	stormLock.RLock()
	t.Cleanup(stormLock.RUnlock)
}

// outsideStorms runs wait, a long wait of a parallel test (for a TTL, say)
// that needs no deadline met, without the test's share of stormLock, so that
// storms run meanwhile; the test takes its share back after it, once no
// storm runs.
func outsideStorms(wait func()) {
	stormLock.RUnlock()
	defer stormLock.RLock()
	wait()
}

// gate is a readers-writer lock that prefers readers: Lock waits until no
// reader holds it, and RLock waits only while a writer holds it.
type gate struct {
	mu      sync.Mutex
	changed *sync.Cond
	readers int
	writer  bool
}

func newGate() *gate {
	g := &gate{}
	g.changed = sync.NewCond(&g.mu)
	return g
}

func (g *gate) RLock() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.writer {
		g.changed.Wait()
	}
	g.readers++
}

func (g *gate) RUnlock() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.readers--
	g.changed.Broadcast()
}

func (g *gate) Lock() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.writer || g.readers > 0 {
		g.changed.Wait()
	}
	g.writer = true
}

func (g *gate) Unlock() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writer = false
	g.changed.Broadcast()
}

// waiting runs t beside every other test, storms included.
func waiting(t *testing.T) {
	t.Helper()
	t.Parallel()
}

// setup checks for every component and starts the shared ones. The control
// plane and the emulator start concurrently: each takes seconds.
func setup() (*testEnv, error) {
	start := time.Now()
	prereqs := []components.Prereq{components.Emulator, components.Java, components.Kubectl, components.Unshare, components.Curl}
	if raceEnabled {
		prereqs = append(prereqs, components.CC)
	}
	if err := components.Check(prereqs...); err != nil {
		return nil, err
	}
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	binDir, err := K8sBinDir(context.Background())
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
		env.close()
		return nil, err
	}
	// The test's own Datastore clients talk to the emulator.
	os.Setenv("DATASTORE_EMULATOR_HOST", env.emu.Host)
	fmt.Fprintf(os.Stderr, "e2e: control plane at %s, datastore emulator at %s, ready in %s\n",
		env.cp.API.Addr, env.emu.Host, time.Since(start).Round(time.Millisecond))
	return env, nil
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

// env returns the shared environment, starting it on first use, and skips
// the test in -short mode. A missing or broken component fails the test.
func env(t *testing.T) *testEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: needs etcd, kube-apiserver and the Datastore emulator; skipped with -short")
	}
	shared.once.Do(func() { shared.env, shared.err = setup() })
	if shared.err != nil {
		t.Fatalf("e2e: a real component is missing or broken (-short skips the end-to-end tests):\n%v", shared.err)
	}
	return shared.env
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

// privateEnv returns an environment of t's own for a test that stops a
// component: a control plane (ownCP) or an emulator (ownEmu) that no other
// test uses, the shared ones otherwise, and the shared server binary. What
// it started stops at the end of t.
func privateEnv(t *testing.T, ownCP, ownEmu bool) *testEnv {
	t.Helper()
	e := env(t)
	p := &testEnv{root: e.root, dir: t.TempDir(), cp: e.cp, emu: e.emu, binary: e.serverBinary(t)}
	p.buildOnce.Do(func() {})
	if ownCP {
		cp, err := StartControlPlane(e.cp.BinDir, p.dir)
		if err != nil {
			t.Fatalf("a control plane of the test's own: %v", err)
		}
		t.Cleanup(cp.Close)
		p.cp = cp
	}
	if ownEmu {
		emu, err := StartEmulator(filepath.Join(p.dir, "datastore-emulator.log"))
		if err != nil {
			t.Fatalf("an emulator of the test's own: %v", err)
		}
		t.Cleanup(emu.Stop)
		p.emu = emu
	}
	return p
}

// TestGatePrefersReaders checks stormLock's lock: a writer waits for the
// readers; a reader arriving while a writer waits does not wait.
func TestGatePrefersReaders(t *testing.T) {
	g := newGate()
	g.RLock()
	locked := make(chan struct{})
	go func() {
		g.Lock()
		close(locked)
	}()
	time.Sleep(50 * time.Millisecond)
	read := make(chan struct{})
	go func() {
		g.RLock() // with sync.RWMutex this would wait for the writer
		close(read)
	}()
	select {
	case <-read:
	case <-time.After(5 * time.Second):
		t.Fatal("a reader waited for a waiting writer")
	}
	select {
	case <-locked:
		t.Fatal("the writer got the lock while readers held it")
	default:
	}
	g.RUnlock()
	g.RUnlock()
	select {
	case <-locked:
	case <-time.After(5 * time.Second):
		t.Fatal("the writer did not get the lock once the readers left")
	}
	g.Unlock()
}
