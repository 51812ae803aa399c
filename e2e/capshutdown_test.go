package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// hanging is a kubeadm and kubectl that never answer in time (the server
// kills a readiness check after 5 s, any other run after -command-timeout,
// 30 s). The shell stays, under the program's name, for childrenNamed.
const hanging = "#!/bin/sh\nsleep 30\n"

// TestSIGTERMAtConnectionCap fills every connection slot of a server
// (-max-connections 4) and its reserve of 16 with requests that do not
// end: 4 token requests in kubectl runs that hang, 8 more waiting on the
// reserve for a regular slot, and 8 readiness checks waiting for the
// kubectl of the first. One more connection then waits in the backlog, unaccepted.
// On SIGTERM the server must exit within -shutdown-delay +
// -shutdown-timeout (0.5 s + 1 s; 1 s allowed for the exit itself),
// although requests are still running: an Accept waiting for a slot must
// not hold Shutdown past its deadline.
func TestSIGTERMAtConnectionCap(t *testing.T) {
	parallel(t)
	const (
		regular = 4
		delay   = 500 * time.Millisecond
		grace   = time.Second
	)
	e := env(t)
	binDir := t.TempDir()
	for _, name := range []string{"kubeadm", "kubectl"} {
		if err := os.WriteFile(filepath.Join(binDir, name), []byte(hanging), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s, err := StartServer(ServerOptions{
		Binary: e.serverBinary(t),
		Args: []string{"-bin-dir", binDir, "-kubeconfig", e.cp.Kubeconfig,
			"-max-connections", fmt.Sprint(regular), "-max-concurrent-commands", fmt.Sprint(regular),
			"-backend-timeout", "10m", "-shutdown-delay", delay.String(), "-shutdown-timeout", grace.String()},
		Env: []string{"DATASTORE_EMULATOR_HOST=" + e.emu.Host},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.proc.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("server log:\n%s", s.Log())
		}
	})
	addr := s.URL[len("http://"):]
	open := func(req string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprint(c, req)
	}
	token := func(host string) string {
		body := extensionBody(t, host, "")
		return fmt.Sprintf("POST /v2/allocate_k8s_token HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
	for i := range regular {
		open(token(fmt.Sprintf("mlab1-cap%02d.mlab-sandbox.measurement-lab.org", i)))
	}
	// The token requests are in their kubectl runs: the exec backend may
	// carry several in one run, so every connection open and a kubectl
	// running, then a moment for the last batch to start.
	waitInFlight(t, s, regular)
	time.Sleep(300 * time.Millisecond)
	running := childrenNamed(s.Pid(), "kubectl")
	// Half the reserve: the most that may wait for a regular slot.
	for i := range 8 {
		open(token(fmt.Sprintf("mlab1-cpw%02d.mlab-sandbox.measurement-lab.org", i)))
	}
	time.Sleep(300 * time.Millisecond)
	for range 8 {
		open("GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	waitChildren(t, s, "kubectl", running+1) // the readiness check
	time.Sleep(300 * time.Millisecond)
	// At the cap: a further connection is not accepted.
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	fmt.Fprint(extra, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	extra.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if resp, err := http.ReadResponse(bufio.NewReader(extra), nil); err == nil {
		t.Fatalf("GET / on a further connection answered %d: the server was not at its connection cap", resp.StatusCode)
	}

	signalled := time.Now()
	if err := s.Terminate(); err != nil {
		t.Fatal(err)
	}
	bound := delay + grace + time.Second
	select {
	case <-s.Exited():
		t.Logf("exited %s after SIGTERM at the connection cap (-shutdown-delay %s, -shutdown-timeout %s): %v",
			time.Since(signalled).Round(time.Millisecond), delay, grace, s.proc.ExitErr())
	case <-time.After(bound):
		t.Fatalf("still running %s after SIGTERM, with -shutdown-delay %s and -shutdown-timeout %s", bound, delay, grace)
	}
}

// waitChildren waits until s has at least n children named comm.
func waitChildren(t *testing.T, s *Server, comm string, n int) {
	t.Helper()
	err := Poll(time.Minute, 10*time.Millisecond, s.proc, func(context.Context) error {
		if got := childrenNamed(s.Pid(), comm); got < n {
			return fmt.Errorf("%d %s children of the server, want %d", got, comm, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
