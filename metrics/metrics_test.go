package metrics_test

import (
	"slices"
	"testing"

	"github.com/m-lab/go/prometheusx/promtest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/m-lab/epoxy-extensions/metrics"
)

// touch gives every metric a sample, so that each appears in /metrics.
func touch() {
	metrics.TokenRequestDuration.WithLabelValues("POST", "200").Observe(0.12)
	metrics.BMCRequestDuration.WithLabelValues("POST", "200").Observe(0.3)
	metrics.NodeRequestDuration.WithLabelValues("POST", "200").Observe(0.2)
	metrics.Refusals.WithLabelValues("allocate_k8s_token", "boot_too_old").Inc()
	metrics.BackendFailures.WithLabelValues("kubectl").Inc()
	metrics.KubeAPIDuration.WithLabelValues("create_secret", "ok").Observe(0.004)
	metrics.KubeAPIErrors.WithLabelValues("create_secret", "unreachable").Inc()
}

func TestLintMetrics(t *testing.T) {
	touch()
	promtest.LintMetrics(t)
}

// TestRequestHistograms checks the names, type and labels that M-Lab's alerts
// and dashboards scrape today (CONTRACT.md).
func TestRequestHistograms(t *testing.T) {
	touch()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("Gather() error = %v", err)
	}
	tests := []struct {
		name       string
		metric     string
		wantLabels []string
		// wantBuckets are the upper bounds of M-Lab's original server
		// (its metrics/metrics.go), +Inf aside: old and new replicas'
		// series are summed during a rollout.
		wantBuckets []float64
	}{
		{name: "token", metric: "allocate_k8s_token_request_duration_seconds", wantLabels: []string{"code", "method"},
			wantBuckets: []float64{0.001, 0.01, 0.1, 1, 5, 10, 30, 60, 120, 300}},
		{name: "bmc", metric: "bmc_store_password_request_duration_seconds", wantLabels: []string{"code", "method"},
			wantBuckets: []float64{0.001, 0.01, 0.1, 1, 5, 10, 30, 60, 120, 300}},
		{name: "node", metric: "node_request_duration_seconds", wantLabels: []string{"code", "method"},
			wantBuckets: []float64{0.001, 0.01, 0.1, 1, 5, 10, 30}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			i := -1
			for j, f := range families {
				if f.GetName() == tc.metric {
					i = j
				}
			}
			if i < 0 {
				t.Fatalf("metric %q is not registered with the default registry", tc.metric)
			}
			f := families[i]
			if got := f.GetType().String(); got != "HISTOGRAM" {
				t.Errorf("metric %q has type %s, want HISTOGRAM", tc.metric, got)
			}
			if len(f.GetMetric()) == 0 {
				t.Fatalf("metric %q has no series", tc.metric)
			}
			for _, m := range f.GetMetric() {
				var got []string
				for _, l := range m.GetLabel() {
					got = append(got, l.GetName())
				}
				slices.Sort(got)
				if !slices.Equal(got, tc.wantLabels) {
					t.Errorf("metric %q has labels %q, want exactly %q", tc.metric, got, tc.wantLabels)
				}
				var bounds []float64
				for _, b := range m.GetHistogram().GetBucket() {
					bounds = append(bounds, b.GetUpperBound())
				}
				if !slices.Equal(bounds, tc.wantBuckets) {
					t.Errorf("metric %q has buckets %v, want the original's %v", tc.metric, bounds, tc.wantBuckets)
				}
			}
		})
	}
}

// TestInitialised checks that the series alerts read exist before any
// request, so that their rates read 0 rather than nothing.
func TestInitialised(t *testing.T) {
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("Gather() error = %v", err)
	}
	has := func(metric string, labels map[string]string) bool {
		for _, f := range families {
			if f.GetName() != metric {
				continue
			}
		series:
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
						continue series
					}
				}
				return true
			}
		}
		return false
	}
	tests := []struct {
		name   string
		metric string
		labels map[string]string
	}{
		{"token 500", "allocate_k8s_token_request_duration_seconds", map[string]string{"method": "post", "code": "500"}},
		{"token 503", "allocate_k8s_token_request_duration_seconds", map[string]string{"method": "post", "code": "503"}},
		{"token 408", "allocate_k8s_token_request_duration_seconds", map[string]string{"method": "post", "code": "408"}},
		{"bmc 500", "bmc_store_password_request_duration_seconds", map[string]string{"method": "post", "code": "500"}},
		{"node 200", "node_request_duration_seconds", map[string]string{"method": "post", "code": "200"}},
		{"refusal source", "epoxy_extensions_refusals_total", map[string]string{"endpoint": "node_delete", "reason": "source"}},
		{"refusal token limit", "epoxy_extensions_refusals_total", map[string]string{"endpoint": "allocate_k8s_token_v2", "reason": "token_limit"}},
		{"refusal busy", "epoxy_extensions_refusals_total", map[string]string{"endpoint": "allocate_k8s_token_v1", "reason": "busy"}},
		{"refusal password", "epoxy_extensions_refusals_total", map[string]string{"endpoint": "bmc_store_password", "reason": "password"}},
		{"backend failure dns", "epoxy_extensions_backend_failures_total", map[string]string{"backend": "dns"}},
		{"backend failure kube_api", "epoxy_extensions_backend_failures_total", map[string]string{"backend": "kube_api"}},
		{"backend duration kubectl", "epoxy_extensions_backend_duration_seconds", map[string]string{"backend": "kubectl"}},
		{"backend duration datastore", "epoxy_extensions_backend_duration_seconds", map[string]string{"backend": "datastore"}},
		{"backend timeout", "epoxy_extensions_backend_timeout_seconds", nil},
		{"kube api ok", "epoxy_extensions_kube_api_call_duration_seconds", map[string]string{"operation": "create_secret", "result": "ok"}},
		{"kube api error", "epoxy_extensions_kube_api_errors_total", map[string]string{"operation": "delete_node", "reason": "unreachable"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !has(tc.metric, tc.labels) {
				t.Errorf("no series %s%v at start-up", tc.metric, tc.labels)
			}
		})
	}
}
