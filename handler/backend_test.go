package handler

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/m-lab/epoxy-extensions/metrics"
)

// namedTokens and namedNodes are the fakes with a Name method, as the
// real backends have.
type namedTokens struct {
	*fakeTokens
	name string
}

func (n namedTokens) Name() string { return n.name }

type namedNodes struct {
	*fakeNodes
	name string
}

func (n namedNodes) Name() string { return n.name }

// TestBackendFailuresByName checks that a failing backend is counted and
// logged under its own name, or under the exec backend's when it has none.
// TestBackendErrors (package main) does the same with the real backends.
func TestBackendFailuresByName(t *testing.T) {
	const tokenPath, nodePath = "/v2/allocate_k8s_token", "/v1/node/delete"
	tests := []struct {
		name   string
		tokens TokenIssuer
		nodes  NodeDeleter
		path   string
		want   string
	}{
		{name: "named token backend", tokens: namedTokens{&fakeTokens{fail: true}, "kube_api"}, path: tokenPath, want: "kube_api"},
		{name: "unnamed token backend", tokens: &fakeTokens{fail: true}, path: tokenPath, want: "kubeadm"},
		{name: "named node backend", nodes: namedNodes{&fakeNodes{fail: true}, "kube_api"}, path: nodePath, want: "kube_api"},
		{name: "unnamed node backend", nodes: &fakeNodes{fail: true}, path: nodePath, want: "kubectl"},
		{name: "another name", nodes: namedNodes{&fakeNodes{fail: true}, "test_backend"}, path: nodePath, want: "test_backend"},
	}
	names := []string{"kube_api", "kubeadm", "kubectl", "test_backend"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tokens, nodes := tc.tokens, tc.nodes
			if tokens == nil {
				tokens = &fakeTokens{}
			}
			if nodes == nil {
				nodes = &fakeNodes{}
			}
			s, logs := testServer(tokens, nodes, &fakeCreds{}, now)
			before := map[string]float64{}
			for _, n := range names {
				before[n] = testutil.ToFloat64(metrics.BackendFailures.WithLabelValues(n))
			}

			resp := do(t, s, "POST", tc.path, body(machine, now, ""))

			if resp.StatusCode != 500 {
				t.Errorf("POST %s = %d, want 500", tc.path, resp.StatusCode)
			}
			for _, n := range names {
				want := 0.0
				if n == tc.want {
					want = 1
				}
				if got := testutil.ToFloat64(metrics.BackendFailures.WithLabelValues(n)) - before[n]; got != want {
					t.Errorf("backend_failures{%s} went up by %v, want %v", n, got, want)
				}
			}
			if want := `"backend":"` + tc.want + `"`; !strings.Contains(logs.String(), want) {
				t.Errorf("log has no %s:\n%s", want, logs)
			}
		})
	}
}

func TestBackendName(t *testing.T) {
	tests := []struct {
		name     string
		backend  any
		fallback string
		want     string
	}{
		{name: "no Name method", backend: &fakeTokens{}, fallback: "kubeadm", want: "kubeadm"},
		{name: "nil", backend: nil, fallback: "kubectl", want: "kubectl"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := backendName(tc.backend, tc.fallback); got != tc.want {
				t.Errorf("backendName(%T, %q) = %q, want %q", tc.backend, tc.fallback, got, tc.want)
			}
		})
	}
}
