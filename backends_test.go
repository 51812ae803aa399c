package main

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/node"
	"github.com/m-lab/epoxy-extensions/token"
)

// TestKubeBackends checks which backend each -kube-backend value builds,
// and that bad settings stop the server at start rather than at the first
// boot.
func TestKubeBackends(t *testing.T) {
	// A kubeconfig whose cluster has no CA: the api backend cannot know
	// the ca_hash it must hand out.
	noCA := filepath.Join(t.TempDir(), "no-ca.conf")
	conf := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n" +
		"contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: x\ncurrent-context: c\n"
	if err := os.WriteFile(noCA, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		backend    string
		kubeconfig string
		qps        float64
		wantErr    error // nil: any error, with wantFail
		wantFail   bool
	}{
		{name: "exec", backend: "exec", qps: 100},
		{name: "unknown backend", backend: "kubectl", qps: 100, wantFail: true},
		{name: "api without kubeconfig outside a pod", backend: "api", qps: 100, wantFail: true, wantErr: kube.ErrNoConfig},
		{name: "api with a kubeconfig without CA", backend: "api", kubeconfig: noCA, qps: 100, wantFail: true, wantErr: kube.ErrCluster},
		{name: "api with no rate", backend: "api", kubeconfig: noCA, qps: 0, wantFail: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBERNETES_SERVICE_HOST", "")
			t.Setenv("KUBERNETES_SERVICE_PORT", "")
			setFlag(t, kubeBackend, tc.backend)
			setFlag(t, kubeconfig, tc.kubeconfig)
			setFlag(t, kubeAPIQPS, tc.qps)
			tokens, nodes, _, err := kubeBackends(slog.New(slog.NewTextHandler(io.Discard, nil)))
			if tc.wantFail {
				if err == nil {
					t.Fatalf("kubeBackends() = nil error, want one")
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Errorf("kubeBackends() error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("kubeBackends() error = %v", err)
			}
			if _, ok := tokens.(*token.Kubeadm); !ok {
				t.Errorf("token issuer is %T, want *token.Kubeadm", tokens)
			}
			if _, ok := nodes.(*node.Kubectl); !ok {
				t.Errorf("node deleter is %T, want *node.Kubectl", nodes)
			}
		})
	}
}

// setFlag sets a flag variable for the test and restores it afterwards.
func setFlag[T any](t *testing.T, p *T, v T) {
	t.Helper()
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}
