package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The shipped rules use 5m windows and for: of 10m or more; the test loads
// them with these instead, so that an alert goes through pending, firing
// and resolved in about a minute. Prometheus scrapes and evaluates every
// second.
var shortIntervals = []struct{ re, with string }{
	{`\[5m\]`, "[15s]"},
	{`\[30m\]`, "[30s]"},
	{`(?m)^(\s+for:) \S+$`, "${1} 3s"},
}

// tokenAlert is the alert the test drives.
const tokenAlert = "EpoxyExtensionServerTokenRequestsFailing"

// TestPrometheusRulesAndTokenAlert runs a real Prometheus, with the rules
// and alerts of deploy/prometheus loaded, scraping a server under a small
// storm of token requests (plus stale boots and node deletes). It checks
// that every rule evaluates without error and every recording rule yields
// series, reads the recording rules' values while kubectl works, then makes
// kubectl fail its creates and sees the token-failure alert go pending and firing, and
// resolve once kubectl works again.
//
// It runs among the parallel tests, not beside a storm: a scrape that
// times out under a storm leaves the recording rules without series.
func TestPrometheusRulesAndTokenAlert(t *testing.T) {
	parallel(t)
	e := env(t)
	binDir, failKubectl := failableBinDir(t, e.cp.BinDir)
	s := e.startServer(t, serverConfig{binDir: binDir, args: []string{"-max-tokens-per-host", "0"}})
	prom := startPrometheus(t, e.root, strings.TrimPrefix(s.URL, "http://"))

	var sent, failed atomic.Int64
	stopStorm := backgroundLoad(t, s, &sent, &failed)
	defer stopStorm()

	t.Run("scraped", func(t *testing.T) {
		prom.waitFor(t, 30*time.Second, `up{job="epoxy-extension-server"} == 1`)
	})
	t.Run("rules healthy", func(t *testing.T) {
		prom.waitFor(t, 30*time.Second, `job_endpoint:epoxy_extensions_requests:rate5m{endpoint="allocate_k8s_token"} > 0`)
		prom.checkRulesHealthy(t)
	})
	t.Run("recording rules while kubectl works", func(t *testing.T) {
		prom.waitFor(t, 30*time.Second, `job_endpoint:epoxy_extensions_request_duration_seconds:p50_rate5m{endpoint="allocate_k8s_token"} > 0`)
		prom.waitFor(t, 30*time.Second, `job_endpoint_reason:epoxy_extensions_refusals:rate5m{endpoint="allocate_k8s_token_v2", reason="boot_too_old"} > 0`)
		prom.waitFor(t, 30*time.Second, `job_backend:epoxy_extensions_backend_duration_seconds:p99_rate5m{backend="kubectl"} > 0`)
		if v := prom.value(t, `job_endpoint:epoxy_extensions_request_5xx:ratio_rate5m{endpoint="allocate_k8s_token"}`); v != 0 {
			t.Errorf("token 5xx ratio = %g while kubectl works, want 0", v)
		}
		if state := prom.alertState(t, tokenAlert); state != "" {
			t.Errorf("%s is %s while kubectl works", tokenAlert, state)
		}
	})

	failKubectl(true)
	t.Run("token alert pending then firing", func(t *testing.T) {
		start := time.Now()
		prom.waitAlert(t, 60*time.Second, tokenAlert, "pending")
		prom.waitAlert(t, 60*time.Second, tokenAlert, "firing")
		t.Logf("pending then firing %s after kubectl began to fail", time.Since(start).Round(100*time.Millisecond))
		if v := prom.value(t, `job_endpoint:epoxy_extensions_request_5xx:ratio_rate5m{endpoint="allocate_k8s_token"}`); v <= 0.1 {
			t.Errorf("token 5xx ratio = %g while firing, want above 0.1", v)
		}
		if v := prom.value(t, `job_backend:epoxy_extensions_backend_failures:rate5m{backend="kubectl"}`); v <= 0 {
			t.Errorf("kubectl failure rate = %g while kubectl fails, want above 0", v)
		}
	})

	failKubectl(false)
	t.Run("token alert resolved", func(t *testing.T) {
		start := time.Now()
		prom.waitAlert(t, 90*time.Second, tokenAlert, "")
		t.Logf("resolved %s after kubectl worked again", time.Since(start).Round(100*time.Millisecond))
	})

	t.Run("every recording rule yields series", func(t *testing.T) {
		// Each within 30 s: one scrape of the race-built server that timed
		// out leaves the rules on raw series without any for a moment.
		for _, name := range prom.recordingRules(t) {
			prom.waitFor(t, 30*time.Second, name)
		}
	})
	stopStorm()
	t.Logf("storm: %d requests, %d failed", sent.Load(), failed.Load())
}

// failableBinDir returns a -bin-dir whose kubectl runs the real one until
// fail(true), then fails every create (a token) with an error on stderr
// until fail(false).
func failableBinDir(t *testing.T, realDir string) (string, func(bool)) {
	t.Helper()
	dir := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\ncase \" $* \" in *\" create \"*) if [ -e \"$0.fail\" ]; then echo 'error: injected failure' >&2; exit 1; fi;; esac\nexec %q \"$@\"\n",
		filepath.Join(realDir, "kubectl"))
	if err := os.WriteFile(filepath.Join(dir, "kubectl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	flag := filepath.Join(dir, "kubectl.fail")
	return dir, func(fail bool) {
		if fail {
			if err := os.WriteFile(flag, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := os.Remove(flag); err != nil {
			t.Fatal(err)
		}
	}
}

// backgroundLoad sends, until the returned function is called, token requests from
// four machines at a time, a stale boot every second and a node delete every
// two, counting requests sent and answered other than 200 or 408.
func backgroundLoad(t *testing.T, s *Server, sent, failed *atomic.Int64) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	loop := func(pause time.Duration, path string, body func(i int) []byte) {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				r, err := send(http.MethodPost, s.URL+path, body(i))
				sent.Add(1)
				if err != nil || (r.status != http.StatusOK && r.status != http.StatusRequestTimeout) {
					failed.Add(1)
				}
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
			}
		})
	}
	// Bodies are made here: the senders' goroutines must not call t.Fatal.
	var machines, gone [][]byte
	for i := range 100 {
		machines = append(machines, extensionBody(t, fmt.Sprintf("mlab%d-prm%02d.mlab-sandbox.measurement-lab.org", i%4+1, i), ""))
		gone = append(gone, extensionBody(t, fmt.Sprintf("gone-%d.example.org", i), ""))
	}
	for w := range 4 {
		loop(250*time.Millisecond, "/v2/allocate_k8s_token", func(i int) []byte { return machines[(4*i+w)%len(machines)] })
	}
	stale, err := json.Marshal(map[string]any{"v1": map[string]any{
		"hostname": "mlab1-old01.mlab-sandbox.measurement-lab.org", "last_boot": time.Now().Add(-5 * time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	loop(time.Second, "/v2/allocate_k8s_token", func(int) []byte { return stale })
	loop(2*time.Second, "/v1/node/delete", func(i int) []byte { return gone[i%len(gone)] })
	var once sync.Once
	return func() { once.Do(func() { cancel(); wg.Wait() }) }
}
