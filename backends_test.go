package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/node"
	"github.com/m-lab/epoxy-extensions/token/kubectl"
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
	withCA := kubeconfigWithCA(t)
	tests := []struct {
		name       string
		backend    string
		kubeconfig string
		qps        float64
		wantErr    error // nil: any error, with wantFail
		wantFail   bool
	}{
		{name: "exec", backend: "exec", kubeconfig: withCA, qps: 100},
		{name: "exec without kubeconfig", backend: "exec", qps: 100, wantFail: true, wantErr: kube.ErrNoConfig},
		{name: "exec with a kubeconfig without CA", backend: "exec", kubeconfig: noCA, qps: 100, wantFail: true, wantErr: kube.ErrCluster},
		{name: "unknown backend", backend: "kubectl", qps: 100, wantFail: true},
		{name: "api without kubeconfig outside a pod", backend: "api", qps: 100, wantFail: true, wantErr: kube.ErrNoConfig},
		{name: "api with a kubeconfig without CA", backend: "api", kubeconfig: noCA, qps: 100, wantFail: true, wantErr: kube.ErrCluster},
		{name: "api with no rate", backend: "api", kubeconfig: noCA, qps: 0, wantFail: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBERNETES_SERVICE_HOST", "")
			t.Setenv("KUBERNETES_SERVICE_PORT", "")
			cfg := backendConfig{Backend: tc.backend, Kubeconfig: tc.kubeconfig, QPS: tc.qps, Burst: 200,
				MaxCommands: 2, CommandTimeout: time.Second, TokenTTL: time.Minute, MaxTokens: 3}
			kb, err := newKubeBackend(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if tc.wantFail {
				if err == nil {
					t.Fatalf("newKubeBackend() = nil error, want one")
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Errorf("newKubeBackend() error = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("newKubeBackend() error = %v", err)
			}
			if _, ok := kb.tokens.Store.(*kubectl.Store); !ok {
				t.Errorf("token store is %T, want *kubectl.Store", kb.tokens.Store)
			}
			if kb.tokens.Max != 3 {
				t.Errorf("token limit = %d, want 3 from the config", kb.tokens.Max)
			}
			if _, ok := kb.nodes.(*node.Kubectl); !ok {
				t.Errorf("node deleter is %T, want *node.Kubectl", kb.nodes)
			}
		})
	}
}

// kubeconfigWithCA writes a kubeconfig whose cluster has a CA (a fresh
// self-signed certificate) and returns its path.
func kubeconfigWithCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	path := filepath.Join(t.TempDir(), "admin.conf")
	conf := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n" +
		"    certificate-authority-data: " + ca + "\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n" +
		"users:\n- name: u\n  user:\n    token: x\ncurrent-context: c\n"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
