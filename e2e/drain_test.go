package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// slowKubectl is a kubectl that waits 2 s before it becomes the real one
// (%s), so that requests are certainly in flight when the test acts.
const slowKubectl = `#!/bin/sh
sleep 2
exec %s "$@"
`

// TestSIGTERMDrainsInFlight sends SIGTERM, as Kubernetes or systemd does on
// a rollout, while 50 token requests are in flight (in a kubectl run, or
// queued for the next): every one
// must still get its 200 and a working token, and the server must then exit
// with status 0.
func TestSIGTERMDrainsInFlight(t *testing.T) {
	parallel(t)
	const inFlight = 50
	e := env(t)
	binDir := slowBinDir(t, e)
	s := e.startServer(t, serverConfig{binDir: binDir, args: []string{
		// Every request runs its kubectl at once, and has all the time it
		// needs: the shutdown grace is -backend-timeout + 5s.
		"-max-concurrent-commands", strconv.Itoa(inFlight),
		"-backend-timeout", "2m",
	}})

	hosts := make([]string, inFlight)
	responses := make([]response, inFlight)
	errs := make([]error, inFlight)
	var answered atomic.Int32
	var wg sync.WaitGroup
	for i := range hosts {
		hosts[i] = fmt.Sprintf("mlab1-d%03d.mlab-sandbox.measurement-lab.org", i)
		body := extensionBody(t, hosts[i], "")
		wg.Go(func() {
			responses[i], errs[i] = send(http.MethodPost, s.URL+"/v2/allocate_k8s_token", body)
			answered.Add(1)
		})
	}
	waitInFlight(t, s, inFlight)
	done := int(answered.Load())
	if err := s.Terminate(); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	t.Logf("SIGTERM sent with %d of %d requests in flight", inFlight-done, inFlight)
	if done == inFlight {
		t.Fatalf("all %d requests were answered before SIGTERM: nothing was left to drain", inFlight)
	}

	wg.Wait()
	checkDrained(t, e, s, hosts, responses, errs)
}

// waitInFlight waits until s holds n client connections open (each
// request has its own) and runs a kubectl, which slowKubectl keeps running
// for 2 s: every request has then reached the server, and the exec backend
// carries each in a kubectl run or queues it for the next (one run creates
// the tokens of every request waiting for it).
func waitInFlight(t *testing.T, s *Server, n int) {
	t.Helper()
	err := Poll(2*time.Minute, 10*time.Millisecond, s.proc, func(context.Context) error {
		if got := childrenNamed(s.Pid(), "kubectl"); got < 1 {
			return fmt.Errorf("no kubectl child of the server")
		}
		if got := metricValue(t, s, "epoxy_extensions_open_connections"); got < float64(n) {
			return fmt.Errorf("%v connections open, want %d", got, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// metricValue returns the value of the unlabelled series name on s's
// /metrics, 0 when it has none.
func metricValue(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	got, err := sendNewConn(s.URL+"/metrics", nil)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	for line := range strings.Lines(string(got.body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s value %q: %v", name, v, err)
			}
			return f
		}
	}
	return 0
}

// slowBinDir returns a folder whose kubectl is slowKubectl in front of the
// real one.
func slowBinDir(t *testing.T, e *testEnv) string {
	t.Helper()
	binDir := t.TempDir()
	script := fmt.Sprintf(slowKubectl, shellQuote(filepath.Join(e.cp.BinDir, "kubectl")))
	if err := os.WriteFile(filepath.Join(binDir, "kubectl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return binDir
}

// checkDrained fails unless every request sent around a SIGTERM got an
// answer, every answer a working token for its host, and the server then
// exited with status 0.
func checkDrained(t *testing.T, e *testEnv, s *Server, hosts []string, responses []response, errs []error) {
	t.Helper()
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v (the server dropped a request in flight)", hosts[i], err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	checkJoinTokens(t, e, hosts, responses)
	if err := s.Wait(3 * time.Minute); err != nil {
		t.Errorf("server exit after SIGTERM: %v, want status 0", err)
	}
}

// shellQuote returns s as one single-quoted shell word.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
