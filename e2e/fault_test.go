package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// faultTimeout is the -backend-timeout of the fault tests, and faultMargin
// what the server may take beyond it to kill, reap and answer.
const (
	faultTimeout = 5 * time.Second
	faultMargin  = 5 * time.Second
)

// checkFailedInTime fails unless got is an empty 500 that came within the
// backend timeout and its margin.
func checkFailedInTime(t *testing.T, got response) {
	t.Helper()
	t.Logf("answered %d after %s", got.status, got.elapsed.Round(time.Millisecond))
	if got.status != http.StatusInternalServerError {
		t.Errorf("status = %d, want 500", got.status)
	}
	if len(got.body) != 0 {
		t.Errorf("body = %q, want empty", got.body)
	}
	if limit := faultTimeout + faultMargin; got.elapsed > limit {
		t.Errorf("answered after %s, want within %s (-backend-timeout %s)", got.elapsed.Round(time.Millisecond), limit, faultTimeout)
	}
}

// hangScript is a kubeadm or kubectl that never finishes. It starts a
// grandchild, writes both pids next to itself and becomes `sleep`.
const hangScript = `#!/bin/sh
sleep 600 &
echo $! > "$0.child"
echo $$ > "$0.pid"
exec sleep 600
`

// checkShedInTime fails unless got is an empty 503 with Retry-After that
// came within the backend timeout and its margin: a run killed at its
// deadline is overload, which the caller may retry.
func checkShedInTime(t *testing.T, got response) {
	t.Helper()
	t.Logf("answered %d after %s", got.status, got.elapsed.Round(time.Millisecond))
	if got.status != http.StatusServiceUnavailable || got.retryAfter == "" {
		t.Errorf("status = %d, Retry-After %q, want 503 with Retry-After", got.status, got.retryAfter)
	}
	if len(got.body) != 0 {
		t.Errorf("body = %q, want empty", got.body)
	}
	if limit := faultTimeout + faultMargin; got.elapsed > limit {
		t.Errorf("answered after %s, want within %s (-backend-timeout %s)", got.elapsed.Round(time.Millisecond), limit, faultTimeout)
	}
}

// TestHungTools runs the server with a kubectl that hangs: each request must
// be shed (503) within the backend timeout, and the hung processes, with
// everything they started, must be gone.
func TestHungTools(t *testing.T) {
	parallel(t)
	e := env(t)
	// Before the server, so that its cleanup runs after the server stopped.
	binDir := hungBinDir(t)
	s := e.startServer(t, serverConfig{binDir: binDir, args: []string{"-backend-timeout", faultTimeout.String()}})
	tests := []struct {
		tool, path, host string
	}{
		{"kubectl", "/v2/allocate_k8s_token", "mlab1-hng01.mlab-sandbox.measurement-lab.org"},
		{"kubectl", "/v1/node/delete", "mlab1-hng02.mlab-sandbox.measurement-lab.org"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			got := post(t, s, tc.path, extensionBody(t, tc.host, ""))
			checkShedInTime(t, got)
			checkHungKilled(t, binDir, tc.tool)
			checkHealthy(t, s)
		})
	}
}

// readPid reads a pid file written by hangScript.
func readPid(t *testing.T, path string) int {
	t.Helper()
	pid, err := pidFile(path)
	if err != nil {
		t.Fatalf("the hung tool left no pid: %v", err)
	}
	return pid
}

func pidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// waitExit waits up to timeout for process pid to disappear, or with zombie
// also to become one, and returns its last state letter (R, S, Z, …), ""
// once it is gone.
func waitExit(pid int, timeout time.Duration, zombie bool) string {
	deadline := time.Now().Add(timeout)
	for {
		st := procState(pid)
		if st == "" || (zombie && st == "Z") || time.Now().After(deadline) {
			return st
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// procState returns the state letter of process pid, or "" if it does not exist.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// "pid (comm) S …": comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return "?"
	}
	return s[i+2 : i+3]
}

// askAgain calls ask once a second until done accepts its answer, for up
// to within, and returns the last answer and how many it took.
func askAgain(ask func() response, done func(response) bool, within time.Duration) (response, int) {
	deadline := time.Now().Add(within)
	for attempt := 1; ; attempt++ {
		got := ask()
		if done(got) || time.Now().After(deadline) {
			return got, attempt
		}
		time.Sleep(time.Second)
	}
}

// postUnlessBusy posts body to s's path, again while the answer is 503
// (busy, with Retry-After, as a machine would retry), for up to a minute,
// and returns the last answer. The fault tests' 5 s backend timeout leaves
// a node delete (kubectl delete, then its tokens revoked) little room on a
// loaded machine; a 500 or any other answer is final.
func postUnlessBusy(t *testing.T, s *Server, path string, body []byte) response {
	t.Helper()
	got, attempts := askAgain(func() response { return post(t, s, path, body) },
		func(r response) bool { return r.status != http.StatusServiceUnavailable }, time.Minute)
	if attempts > 1 {
		t.Logf("%s: %d after %d attempts, the others 503", path, got.status, attempts)
	}
	return got
}

// TestAPIServerDown stops the API server under a running server: token and
// node requests fail within the backend timeout while the server stays up,
// and work again once the API server is back. The control plane is the
// test's own: the others' stays up.
func TestAPIServerDown(t *testing.T) {
	waiting(t)
	e := privateEnv(t, true, false)
	forEachBackend(t, func(t *testing.T, backend string) {
		testAPIServerDown(t, e, backend)
	})
}

func testAPIServerDown(t *testing.T, e *testEnv, backend string) {
	s := e.startServer(t, serverConfig{backend: backend, args: []string{"-backend-timeout", faultTimeout.String()}})
	const host = "mlab1-dwn01.mlab-sandbox.measurement-lab.org"
	e.cp.API.Stop()
	t.Cleanup(func() {
		if !e.cp.API.Running() {
			if err := e.cp.API.Start(); err != nil {
				t.Errorf("restarting the API server: %v", err)
			}
		}
	})
	for _, path := range []string{"/v1/allocate_k8s_token", "/v2/allocate_k8s_token", "/v1/node/delete"} {
		t.Run("down "+path, func(t *testing.T) {
			checkFailedInTime(t, post(t, s, path, extensionBody(t, host, "")))
			checkHealthy(t, s)
		})
	}

	if err := e.cp.API.Start(); err != nil {
		t.Fatalf("restarting the API server: %v", err)
	}
	createNode(t, e, host)
	t.Run("back", func(t *testing.T) {
		got := postUnlessBusy(t, s, "/v2/allocate_k8s_token", extensionBody(t, host, ""))
		if got.status != http.StatusOK {
			t.Errorf("token after the API server came back: status %d, want 200", got.status)
		}
		got = postUnlessBusy(t, s, "/v1/node/delete", extensionBody(t, host, ""))
		if got.status != http.StatusOK {
			t.Errorf("node delete after the API server came back: status %d, want 200", got.status)
		}
		if nodeExists(t, e, host) {
			t.Errorf("node %s still exists", host)
		}
	})
}

// storeOK stores a fresh password with store, once a second, until it
// gets 200, for up to 2 minutes, and returns the password. It is the same
// in every attempt: one that timed out and still lands later stores no
// other.
func storeOK(t *testing.T, store func(password string) response, what string) string {
	t.Helper()
	password := newPassword(t)
	got, attempts := askAgain(func() response { return store(password) },
		func(r response) bool { return r.status == http.StatusOK }, 2*time.Minute)
	if got.status != http.StatusOK {
		t.Fatalf("%s: status %d after %d attempts, want 200", what, got.status, attempts)
	}
	t.Logf("%s: 200 at attempt %d", what, attempts)
	return password
}

// TestEmulatorDown stops Datastore under a running server: BMC stores fail
// within the backend timeout, and succeed again once it is back on its port.
// The emulator is the test's own: the others' stays up.
func TestEmulatorDown(t *testing.T) {
	waiting(t)
	e := privateEnv(t, false, true)
	s := e.startServer(t, serverConfig{
		hosts: map[string]string{bmcName: bmcAddress},
		args:  []string{"-backend-timeout", faultTimeout.String()},
	})
	store := func(password string) response {
		return post(t, s, "/v1/bmc_store_password", extensionBody(t, bmcMachine, "p="+password))
	}
	// A fresh emulator's first writes may outlast the backend timeout on a
	// loaded machine (its JVM has compiled nothing yet): the outage starts
	// once one store went through.
	storeOK(t, store, "store before the outage")

	e.emu.Stop()
	t.Cleanup(func() {
		if !e.emu.Running() {
			if err := e.emu.Start(); err != nil {
				t.Errorf("restarting the emulator: %v", err)
			}
		}
	})
	checkFailedInTime(t, store(newPassword(t)))
	checkHealthy(t, s)

	if err := e.emu.Start(); err != nil {
		t.Fatalf("restarting the emulator: %v", err)
	}
	// The server's client may still be backing off from the outage; stage 1
	// would reboot and ask again, so a few failures are fine, not forever.
	password := storeOK(t, store, "store after the emulator came back")
	checkCredentials(t, e, password)
}

// checkHungKilled checks that the hung tool in binDir (see hungBinDir) and
// the child it started are gone.
func checkHungKilled(t *testing.T, binDir, tool string) {
	t.Helper()
	script := filepath.Join(binDir, tool)
	pid := readPid(t, script+".pid")
	// The server's own child: killed and reaped, no zombie left.
	if st := waitExit(pid, 3*time.Second, false); st != "" {
		t.Errorf("hung %s (pid %d) still exists after the request, state %s", tool, pid, st)
	}
	// Its child: killed with the process group. Once orphaned it is init's
	// to reap, so only a running one counts.
	child := readPid(t, script+".child")
	if st := waitExit(child, 3*time.Second, true); st != "" && st != "Z" {
		t.Errorf("child of the hung %s (pid %d) still runs, state %s", tool, child, st)
	}
}
