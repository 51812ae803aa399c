package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/e2e/components"
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
// series, reads the recording rules' values while kubeadm works, then makes
// kubeadm fail and sees the token-failure alert go pending and firing, and
// resolve once kubeadm works again.
func TestPrometheusRulesAndTokenAlert(t *testing.T) {
	e := env(t)
	binDir, failKubeadm := failableBinDir(t, e.cp.BinDir)
	s := e.startServer(t, serverConfig{binDir: binDir, args: []string{"-max-tokens-per-host", "0"}})
	prom := startPrometheus(t, e.root, strings.TrimPrefix(s.URL, "http://"))

	var sent, failed atomic.Int64
	stopStorm := storm(t, s, &sent, &failed)
	defer stopStorm()

	t.Run("scraped", func(t *testing.T) {
		prom.waitFor(t, 30*time.Second, `up{job="epoxy-extension-server"} == 1`)
	})
	t.Run("rules healthy", func(t *testing.T) {
		prom.waitFor(t, 30*time.Second, `job_endpoint:epoxy_extensions_requests:rate5m{endpoint="allocate_k8s_token"} > 0`)
		prom.checkRulesHealthy(t)
	})
	t.Run("recording rules while kubeadm works", func(t *testing.T) {
		prom.waitFor(t, 30*time.Second, `job_endpoint:epoxy_extensions_request_duration_seconds:p50_rate5m{endpoint="allocate_k8s_token"} > 0`)
		prom.waitFor(t, 30*time.Second, `job_endpoint_reason:epoxy_extensions_refusals:rate5m{endpoint="allocate_k8s_token_v2", reason="boot_too_old"} > 0`)
		prom.waitFor(t, 30*time.Second, `job_backend:epoxy_extensions_backend_duration_seconds:p99_rate5m{backend="kubeadm"} > 0`)
		if v := prom.value(t, `job_endpoint:epoxy_extensions_request_5xx:ratio_rate5m{endpoint="allocate_k8s_token"}`); v != 0 {
			t.Errorf("token 5xx ratio = %g while kubeadm works, want 0", v)
		}
		if state := prom.alertState(t, tokenAlert); state != "" {
			t.Errorf("%s is %s while kubeadm works", tokenAlert, state)
		}
	})

	failKubeadm(true)
	t.Run("token alert pending then firing", func(t *testing.T) {
		start := time.Now()
		prom.waitAlert(t, 60*time.Second, tokenAlert, "pending")
		prom.waitAlert(t, 60*time.Second, tokenAlert, "firing")
		t.Logf("pending then firing %s after kubeadm began to fail", time.Since(start).Round(100*time.Millisecond))
		if v := prom.value(t, `job_endpoint:epoxy_extensions_request_5xx:ratio_rate5m{endpoint="allocate_k8s_token"}`); v <= 0.1 {
			t.Errorf("token 5xx ratio = %g while firing, want above 0.1", v)
		}
		if v := prom.value(t, `job_backend:epoxy_extensions_backend_failures:rate5m{backend="kubeadm"}`); v <= 0 {
			t.Errorf("kubeadm failure rate = %g while kubeadm fails, want above 0", v)
		}
	})

	failKubeadm(false)
	t.Run("token alert resolved", func(t *testing.T) {
		start := time.Now()
		prom.waitAlert(t, 90*time.Second, tokenAlert, "")
		t.Logf("resolved %s after kubeadm worked again", time.Since(start).Round(100*time.Millisecond))
	})

	t.Run("every recording rule yields series", func(t *testing.T) {
		for _, name := range prom.recordingRules(t) {
			if n := len(prom.query(t, name)); n == 0 {
				t.Errorf("%s: no series", name)
			}
		}
	})
	stopStorm()
	t.Logf("storm: %d requests, %d failed", sent.Load(), failed.Load())
}

// failableBinDir returns a -bin-dir whose kubeadm runs the real one until
// fail(true), then exits 1 with an error on stderr until fail(false). Its
// kubectl is the real one.
func failableBinDir(t *testing.T, realDir string) (string, func(bool)) {
	t.Helper()
	dir := t.TempDir()
	script := fmt.Sprintf("#!/bin/sh\nif [ -e \"$0.fail\" ]; then echo 'error: injected failure' >&2; exit 1; fi\nexec %q \"$@\"\n",
		filepath.Join(realDir, "kubeadm"))
	if err := os.WriteFile(filepath.Join(dir, "kubeadm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(realDir, "kubectl"), filepath.Join(dir, "kubectl")); err != nil {
		t.Fatal(err)
	}
	flag := filepath.Join(dir, "kubeadm.fail")
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

// storm sends, until the returned function is called, token requests from
// four machines at a time, a stale boot every second and a node delete every
// two, counting requests sent and answered other than 200 or 408.
func storm(t *testing.T, s *Server, sent, failed *atomic.Int64) func() {
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

// prometheus is a Prometheus server the test started.
type prometheus struct {
	url string
	log *SyncBuffer
}

// startPrometheus starts Prometheus (from e2e/components) scraping target
// as job epoxy-extension-server every second, with deploy/prometheus's
// rules and alerts loaded with shortIntervals, and stops it at the end of
// the test.
func startPrometheus(t *testing.T, root, target string) *prometheus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	bin, err := components.Ensure(ctx, components.Prometheus(components.PrometheusVersion), os.Stderr)
	if err != nil {
		t.Fatalf("prometheus: %v", err)
	}
	dir := t.TempDir()
	for _, f := range []string{"rules.yml", "alerts.yml"} {
		b, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", f))
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, s := range shortIntervals {
			text = regexp.MustCompile(s.re).ReplaceAllString(text, s.with)
		}
		if err := os.WriteFile(filepath.Join(dir, f), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [rules.yml, alerts.yml]
scrape_configs:
  - job_name: epoxy-extension-server
    static_configs:
      - targets: [%q]
`, target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p := &prometheus{url: "http://127.0.0.1:" + strconv.Itoa(port), log: &SyncBuffer{}}
	proc, err := StartProcess("prometheus", p.log, nil, filepath.Join(bin, "prometheus"),
		"--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		proc.Stop(10 * time.Second)
		if t.Failed() {
			t.Logf("prometheus log:\n%s", p.log.String())
		}
	})
	err = Poll(60*time.Second, 100*time.Millisecond, proc, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, p.url+"/-/ready", "")
	})
	if err != nil {
		t.Fatalf("prometheus: %v\n%s", err, p.log.String())
	}
	return p
}

// get decodes the data of Prometheus API response at path into out.
func (p *prometheus) get(t *testing.T, path string, out any) {
	t.Helper()
	resp, err := http.Get(p.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if r.Status != "success" {
		t.Fatalf("GET %s: %s %s", path, r.Status, r.Error)
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// sample is one series of an instant query's answer.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query runs an instant query.
func (p *prometheus) query(t *testing.T, q string) []sample {
	t.Helper()
	var data struct {
		Result []sample `json:"result"`
	}
	p.get(t, "/api/v1/query?query="+url.QueryEscape(q), &data)
	return data.Result
}

// value returns the value of the one series q yields.
func (p *prometheus) value(t *testing.T, q string) float64 {
	t.Helper()
	r := p.query(t, q)
	if len(r) != 1 {
		t.Fatalf("%s: %d series, want 1: %v", q, len(r), r)
	}
	s, _ := r[0].Value[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("%s: value %v: %v", q, r[0].Value, err)
	}
	return v
}

// waitFor waits until q yields a series.
func (p *prometheus) waitFor(t *testing.T, timeout time.Duration, q string) {
	t.Helper()
	for deadline := time.Now().Add(timeout); len(p.query(t, q)) == 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s yielded nothing for %s", q, timeout)
		}
	}
}

// alertState returns the state of alert name ("pending", "firing"), or ""
// when it is not active.
func (p *prometheus) alertState(t *testing.T, name string) string {
	t.Helper()
	var data struct {
		Alerts []struct {
			Labels map[string]string `json:"labels"`
			State  string            `json:"state"`
		} `json:"alerts"`
	}
	p.get(t, "/api/v1/alerts", &data)
	for _, a := range data.Alerts {
		if a.Labels["alertname"] == name {
			return a.State
		}
	}
	return ""
}

// waitAlert waits until alert name is in state ("" for not active).
func (p *prometheus) waitAlert(t *testing.T, timeout time.Duration, name, state string) {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(200 * time.Millisecond) {
		got := p.alertState(t, name)
		if got == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %q after %s, want %q", name, got, timeout, state)
		}
	}
}

// rules returns every loaded rule.
func (p *prometheus) rules(t *testing.T) []struct{ Name, Type, Health, LastError string } {
	t.Helper()
	var data struct {
		Groups []struct {
			Rules []struct {
				Name      string `json:"name"`
				Type      string `json:"type"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	p.get(t, "/api/v1/rules", &data)
	var out []struct{ Name, Type, Health, LastError string }
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			out = append(out, struct{ Name, Type, Health, LastError string }{r.Name, r.Type, r.Health, r.LastError})
		}
	}
	if len(out) == 0 {
		t.Fatal("prometheus loaded no rules")
	}
	return out
}

// checkRulesHealthy fails for each rule whose last evaluation failed.
func (p *prometheus) checkRulesHealthy(t *testing.T) {
	t.Helper()
	for _, r := range p.rules(t) {
		if r.Health != "ok" {
			t.Errorf("rule %s: health %q: %s", r.Name, r.Health, r.LastError)
		}
	}
}

// recordingRules returns the names the loaded recording rules record.
func (p *prometheus) recordingRules(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, r := range p.rules(t) {
		if r.Type == "recording" && !slices.Contains(names, r.Name) {
			names = append(names, r.Name)
		}
	}
	return names
}
