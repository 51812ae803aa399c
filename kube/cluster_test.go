package kube

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// newCA returns a fresh self-signed CA certificate and its PEM.
func newCA(t *testing.T, name string) (*x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// pin is kubeadm's --discovery-token-ca-cert-hash for ca, computed here
// rather than with CAHash.
func pin(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// writeFile writes text to dir/name, making folders as needed, and
// returns its path.
func writeFile(t *testing.T, dir, name string, text []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, text, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubeconfig is a kubeconfig with clusters (name → cluster fields in
// YAML, indented 4) and one context per cluster named ctx-NAME.
func kubeconfig(current string, clusters map[string]string) []byte {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Config\nclusters:\n")
	for name, fields := range clusters {
		b.WriteString("- name: \"" + name + "\"\n  cluster:\n" + fields)
	}
	b.WriteString("contexts:\n")
	for name := range clusters {
		b.WriteString("- name: ctx-" + name + "\n  context:\n    cluster: \"" + name + "\"\n    user: admin\n")
	}
	b.WriteString("users:\n- name: admin\n  user:\n    token: not-a-real-token\n")
	b.WriteString("current-context: " + current + "\n")
	return []byte(b.String())
}

// inline is the fields of a cluster at server with inline CA data.
func inline(server string, ca []byte) string {
	return "    server: " + server + "\n    certificate-authority-data: " + base64.StdEncoding.EncodeToString(ca) + "\n"
}

func TestClusterFromKubeconfig(t *testing.T) {
	caA, pemA := newCA(t, "ca-a")
	caB, pemB := newCA(t, "ca-b")
	dir := t.TempDir()
	absCA := writeFile(t, dir, "abs/ca.crt", pemA)
	writeFile(t, dir, "conf/pki/ca.crt", pemB) // relative to the kubeconfig in conf/
	tests := []struct {
		name     string
		current  string
		clusters map[string]string
		want     Cluster
		wantErr  error // errors.Is target; nil for success
	}{
		{name: "inline CA data", current: "ctx-k", clusters: map[string]string{"k": inline("https://10.0.0.1:6443", pemA)},
			want: Cluster{APIAddress: "10.0.0.1:6443", CAHash: pin(caA)}},
		{name: "CA file, absolute", current: "ctx-k", clusters: map[string]string{
			"k": "    server: https://api.example.org:6443\n    certificate-authority: " + absCA + "\n"},
			want: Cluster{APIAddress: "api.example.org:6443", CAHash: pin(caA)}},
		{name: "CA file, relative to the kubeconfig", current: "ctx-k", clusters: map[string]string{
			"k": "    server: https://api.example.org:6443\n    certificate-authority: pki/ca.crt\n"},
			want: Cluster{APIAddress: "api.example.org:6443", CAHash: pin(caB)}},
		{name: "current context names the cluster", current: "ctx-b", clusters: map[string]string{
			"a": inline("https://10.0.0.1:6443", pemA), "b": inline("https://10.0.0.2:443", pemB)},
			want: Cluster{APIAddress: "10.0.0.2:443", CAHash: pin(caB)}},
		{name: "unnamed cluster wins", current: "ctx-b", clusters: map[string]string{
			"": inline("https://10.0.0.9:6443", pemA), "b": inline("https://10.0.0.2:443", pemB)},
			want: Cluster{APIAddress: "10.0.0.9:6443", CAHash: pin(caA)}},
		{name: "CA bundle: first certificate", current: "ctx-k", clusters: map[string]string{
			"k": inline("https://10.0.0.1:6443", append(append([]byte{}, pemB...), pemA...))},
			want: Cluster{APIAddress: "10.0.0.1:6443", CAHash: pin(caB)}},
		{name: "IPv6", current: "ctx-k", clusters: map[string]string{"k": inline("https://[2001:db8::1]:6443", pemA)},
			want: Cluster{APIAddress: "[2001:db8::1]:6443", CAHash: pin(caA)}},
		{name: "server without port", current: "ctx-k", clusters: map[string]string{"k": inline("https://10.0.0.1", pemA)}, wantErr: ErrCluster},
		{name: "http server", current: "ctx-k", clusters: map[string]string{"k": inline("http://10.0.0.1:6443", pemA)}, wantErr: ErrCluster},
		{name: "server with a path", current: "ctx-k", clusters: map[string]string{"k": inline("https://10.0.0.1:6443/k8s", pemA)}, wantErr: ErrCluster},
		{name: "server with port 0", current: "ctx-k", clusters: map[string]string{"k": inline("https://10.0.0.1:0", pemA)}, wantErr: ErrCluster},
		{name: "missing current context", current: "ctx-gone", clusters: map[string]string{"k": inline("https://10.0.0.1:6443", pemA)}, wantErr: ErrCluster},
		{name: "no current context", current: `""`, clusters: map[string]string{"k": inline("https://10.0.0.1:6443", pemA)}, wantErr: ErrCluster},
		{name: "no CA", current: "ctx-k", clusters: map[string]string{"k": "    server: https://10.0.0.1:6443\n"}, wantErr: ErrCluster},
		{name: "CA file missing", current: "ctx-k", clusters: map[string]string{
			"k": "    server: https://10.0.0.1:6443\n    certificate-authority: pki/none.crt\n"}, wantErr: ErrCluster},
		{name: "CA data not PEM", current: "ctx-k", clusters: map[string]string{"k": inline("https://10.0.0.1:6443", []byte("hello"))}, wantErr: ErrCluster},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, dir, "conf/"+strings.ReplaceAll(tc.name, " ", "_")+".conf", kubeconfig(tc.current, tc.clusters))
			got, err := ClusterFromKubeconfig(path)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("ClusterFromKubeconfig() = %+v, %v; want an error wrapping %v", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ClusterFromKubeconfig() = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestClusterFromKubeconfigOddFiles(t *testing.T) {
	dir := t.TempDir()
	_, err := ClusterFromKubeconfig(filepath.Join(dir, "none.conf"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ClusterFromKubeconfig(missing file) error = %v, want one wrapping fs.ErrNotExist", err)
	}
	if _, err := ClusterFromKubeconfig(writeFile(t, dir, "bad.conf", []byte("clusters: [[[\n"))); err == nil {
		t.Error("ClusterFromKubeconfig(not YAML) error = nil, want one")
	}
	dangling := "apiVersion: v1\nkind: Config\ncontexts:\n- name: c\n  context:\n    cluster: gone\ncurrent-context: c\n"
	if _, err := ClusterFromKubeconfig(writeFile(t, dir, "dangling.conf", []byte(dangling))); !errors.Is(err, ErrCluster) {
		t.Errorf("ClusterFromKubeconfig(context naming a missing cluster) error = %v, want ErrCluster", err)
	}
}

// fakeConfigMaps answers Get with cm and err, recording the names asked for.
type fakeConfigMaps struct {
	cm    *corev1.ConfigMap
	err   error
	names []string
}

var (
	_ ConfigMapGetter = (*fakeConfigMaps)(nil)
	_ ConfigMapGetter = corev1client.ConfigMapInterface(nil)
)

func (f *fakeConfigMaps) Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.ConfigMap, error) {
	f.names = append(f.names, name)
	return f.cm, f.err
}

// clusterInfo is the kube-public/cluster-info ConfigMap kubeadm writes,
// with data.
func clusterInfo(data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "cluster-info", Namespace: "kube-public"},
		Data:       data,
	}
}

func TestClusterFromClusterInfo(t *testing.T) {
	ca, caPEM := newCA(t, "kubernetes")
	// As kubeadm writes it: one unnamed cluster, no contexts, no users.
	kubeadmInfo := "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n" +
		inline("https://api.mlab-sandbox.measurement-lab.org:6443", caPEM) +
		"  name: \"\"\ncontexts: null\ncurrent-context: \"\"\npreferences: {}\nusers: null\n"
	tests := []struct {
		name      string
		cms       *fakeConfigMaps
		want      Cluster
		wantErr   error // errors.Is target
		wantErrOK func(error) bool
	}{
		{name: "kubeadm's cluster-info", cms: &fakeConfigMaps{cm: clusterInfo(map[string]string{"kubeconfig": kubeadmInfo, "jws-kubeconfig-abcdef": "x"})},
			want: Cluster{APIAddress: "api.mlab-sandbox.measurement-lab.org:6443", CAHash: pin(ca)}},
		{name: "not found", cms: &fakeConfigMaps{err: apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, "cluster-info")},
			wantErrOK: apierrors.IsNotFound},
		{name: "forbidden", cms: &fakeConfigMaps{err: apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "cluster-info", errors.New("RBAC"))},
			wantErrOK: apierrors.IsForbidden},
		{name: "no kubeconfig key", cms: &fakeConfigMaps{cm: clusterInfo(map[string]string{"jws-kubeconfig-abcdef": "x"})}, wantErr: ErrCluster},
		{name: "no data", cms: &fakeConfigMaps{cm: clusterInfo(nil)}, wantErr: ErrCluster},
		{name: "garbage kubeconfig", cms: &fakeConfigMaps{cm: clusterInfo(map[string]string{"kubeconfig": "clusters: [[[\x00"})},
			wantErrOK: func(err error) bool { return err != nil && !errors.Is(err, ErrCluster) }},
		{name: "kubeconfig without CA", cms: &fakeConfigMaps{cm: clusterInfo(map[string]string{"kubeconfig": strings.Replace(kubeadmInfo, "certificate-authority-data", "x-data", 1)})},
			wantErr: ErrCluster},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ClusterFromClusterInfo(context.Background(), tc.cms)
			if want := []string{"cluster-info"}; !slices.Equal(tc.cms.names, want) {
				t.Errorf("ClusterFromClusterInfo() read ConfigMaps %q, want %q", tc.cms.names, want)
			}
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("ClusterFromClusterInfo() = %+v, %v; want an error wrapping %v", got, err, tc.wantErr)
				}
			case tc.wantErrOK != nil:
				if !tc.wantErrOK(err) {
					t.Errorf("ClusterFromClusterInfo() = %+v, %v; not the error wanted", got, err)
				}
			case err != nil || got != tc.want:
				t.Errorf("ClusterFromClusterInfo() = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
