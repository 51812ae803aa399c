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
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/e2e/components"
)

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
