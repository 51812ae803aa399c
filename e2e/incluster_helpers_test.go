package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The example deployment, and the service account it makes.
const (
	deployManifest = "deploy/epoxy-extensions.yaml"
	deployNS       = "epoxy-extensions"
	deploySA       = "epoxy-extensions"
)

// The machine whose BMC password the in-cluster server stores: not the BMC
// tests' own, whose entity they read back beside this test.
const (
	inClusterMachine = "mlab1-lga02.mlab-sandbox.measurement-lab.org"
	inClusterBMC     = "mlab1d-lga02.mlab-sandbox.measurement-lab.org"
)

// kubectl runs kubectl with the admin kubeconfig and returns its combined
// output; it fails the test when kubectl fails.
func kubectl(t *testing.T, e *testEnv, stdin []byte, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := kubectlCmd(ctx, e, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// kubectlCmd is kubectl with the admin kubeconfig.
func kubectlCmd(ctx context.Context, e *testEnv, args ...string) *exec.Cmd {
	args = append([]string{"--kubeconfig", e.cp.Kubeconfig}, args...)
	return exec.CommandContext(ctx, filepath.Join(e.cp.BinDir, "kubectl"), args...)
}

// manifestDocs returns the YAML documents of the manifest at path.
func manifestDocs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []string
	for _, d := range strings.Split("\n"+string(b), "\n---\n") {
		if strings.Contains(d, "\nkind: ") {
			docs = append(docs, d)
		}
	}
	return docs
}

// removeManifest deletes every object of the manifest at path and then the
// namespace itself: with no kube-controller-manager running, nothing else
// empties and finalizes a deleted namespace, so the test does what the
// namespace controller would once the namespace is empty.
func removeManifest(t *testing.T, e *testEnv, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := kubectlCmd(ctx, e, "delete", "-f", path, "--ignore-not-found", "--wait=false").CombinedOutput(); err != nil {
		t.Errorf("kubectl delete -f %s: %v\n%s", path, err, out)
	}
	ns := map[string]any{"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": deployNS}, "spec": map[string]any{"finalizers": []string{}}}
	status, body := apiDo(t, e, http.MethodPut, "/api/v1/namespaces/"+deployNS+"/finalize", ns)
	if status != http.StatusOK && status != http.StatusNotFound {
		t.Errorf("finalizing namespace %s: %d %s", deployNS, status, body)
	}
	err := Poll(30*time.Second, 100*time.Millisecond, nil, func(ctx context.Context) error {
		status, body, err := e.cp.API.Do(ctx, http.MethodGet, "/api/v1/namespaces/"+deployNS, nil)
		if err == nil && status != http.StatusNotFound {
			err = fmt.Errorf("GET namespace: %d %s", status, body)
		}
		return err
	})
	if err != nil {
		t.Errorf("namespace %s not removed: %v", deployNS, err)
	}
	out, err := kubectlCmd(ctx, e, "get", "-f", path, "--ignore-not-found", "-o", "name").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("left behind after removal (%v):\n%s", err, out)
	}
}

// serviceAccountToken asks the TokenRequest API for a token of the service
// account ns/name, as the kubelet does for a pod's projected volume.
func serviceAccountToken(t *testing.T, e *testEnv, ns, name string) string {
	t.Helper()
	req := map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
		"spec": map[string]any{"expirationSeconds": 3600}}
	status, body := apiDo(t, e, http.MethodPost, "/api/v1/namespaces/"+ns+"/serviceaccounts/"+name+"/token", req)
	if status != http.StatusCreated {
		t.Fatalf("TokenRequest for %s/%s: %d %s", ns, name, status, body)
	}
	var tr struct {
		Status struct {
			Token string `json:"token"`
		} `json:"status"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.Status.Token == "" {
		t.Fatalf("TokenRequest answer %s: %v", body, err)
	}
	return tr.Status.Token
}

// serviceAccountDir writes what the kubelet mounts at
// /var/run/secrets/kubernetes.io/serviceaccount into a new folder.
func serviceAccountDir(t *testing.T, e *testEnv, token, ns string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "serviceaccount")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"token": []byte(token), "ca.crt": e.cp.PKI.CAPEM, "namespace": []byte(ns)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// publishClusterInfo creates kube-public/cluster-info as `kubeadm init`
// does: a kubeconfig with one unnamed cluster, server and CA data, and
// nothing else. It is removed at the end of the test.
func publishClusterInfo(t *testing.T, e *testEnv, server string) {
	t.Helper()
	if status, _ := apiDo(t, e, http.MethodGet, "/api/v1/namespaces/kube-public", nil); status == http.StatusNotFound {
		ns := map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]string{"name": "kube-public"}}
		if status, body := apiDo(t, e, http.MethodPost, "/api/v1/namespaces", ns); status != http.StatusCreated {
			t.Fatalf("creating namespace kube-public: %d %s", status, body)
		}
	}
	kubeconfig, err := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Config",
		"clusters": []map[string]any{{"name": "", "cluster": map[string]any{
			"server":                     server,
			"certificate-authority-data": e.cp.PKI.CAPEM, // []byte marshals as base64
		}}},
		"contexts": nil, "users": nil, "current-context": "", "preferences": map[string]any{},
	})
	if err != nil {
		t.Fatal(err)
	}
	cm := map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]string{"name": "cluster-info", "namespace": "kube-public"},
		"data":     map[string]string{"kubeconfig": string(kubeconfig)}}
	if status, body := apiDo(t, e, http.MethodPost, "/api/v1/namespaces/kube-public/configmaps", cm); status != http.StatusCreated {
		t.Fatalf("creating kube-public/cluster-info: %d %s", status, body)
	}
	t.Cleanup(func() {
		status, body := apiDo(t, e, http.MethodDelete, "/api/v1/namespaces/kube-public/configmaps/cluster-info", nil)
		if status != http.StatusOK {
			t.Errorf("deleting kube-public/cluster-info: %d %s", status, body)
		}
	})
}

// startInCluster starts the server as a pod would run it: -kube-backend=api
// without -kubeconfig, the API server's address in KUBERNETES_SERVICE_HOST
// and _PORT, and the service account's files at their standard path. Its
// DNS server resolves the test BMC.
func startInCluster(t *testing.T, e *testEnv, saDir string, out io.Writer) (*Server, error) {
	t.Helper()
	host, port, err := net.SplitHostPort(e.cp.API.Addr)
	if err != nil {
		t.Fatal(err)
	}
	return StartServer(ServerOptions{
		Binary: e.serverBinary(t),
		Args:   []string{"-kube-backend=api", "-dns-server", startDNS(t, map[string]string{inClusterBMC: bmcAddress})},
		Output: out,
		Env: []string{"KUBERNETES_SERVICE_HOST=" + host, "KUBERNETES_SERVICE_PORT=" + port,
			"DATASTORE_EMULATOR_HOST=" + e.emu.Host},
		ServiceAccountDir: saDir,
	})
}

// asServiceAccount sends a request to the API server with bearer token and
// no client certificate, and returns the status and body.
func asServiceAccount(t *testing.T, e *testEnv, token, method, path, contentType string, body []byte) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, e.cp.API.URL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := e.cp.API.Client(false).Do(req)
	if err != nil {
		t.Fatalf("%s %s as the service account: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// logLine returns the first JSON line of log whose msg is msg, decoded.
func logLine(log, msg string) map[string]any {
	for line := range strings.SplitSeq(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			return m
		}
	}
	return nil
}

// bootstrapSecretJSON is a Secret like the server's, in namespace ns with
// type typ, its data changed by replace: a key set to "" is left out, and
// the key "name" sets the Secret's name.
func bootstrapSecretJSON(t *testing.T, ns, typ string, replace map[string]string) []byte {
	t.Helper()
	data := map[string]string{
		"token-id": "e2e000", "token-secret": "0123456789abcdef",
		"expiration":                     time.Now().Add(time.Minute).UTC().Format(time.RFC3339),
		"usage-bootstrap-authentication": "true", "usage-bootstrap-signing": "true",
		"auth-extra-groups": "system:bootstrappers:kubeadm:default-node-token",
	}
	name := "bootstrap-token-e2e000"
	for k, v := range replace {
		switch {
		case k == "name":
			name = v
		case v == "":
			delete(data, k)
		default:
			data[k] = v
		}
	}
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Secret", "type": typ,
		"metadata": map[string]string{"name": name, "namespace": ns}, "stringData": data})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitEnforced waits until the manifest's RBAC and admission policy are in
// force for the service account: the API server loads new bindings and
// policies in the background, within a second or so. It tries, as dry runs,
// a Secret like the server's (allowed) and an Opaque one (refused) in
// kube-system.
func waitEnforced(t *testing.T, e *testEnv, saToken string) {
	t.Helper()
	const path = "/api/v1/namespaces/kube-system/secrets?dryRun=All"
	deadline := time.Now().Add(30 * time.Second)
	for {
		allowed, _ := asServiceAccount(t, e, saToken, "POST", path, "application/json", bootstrapSecretJSON(t, "kube-system", bootstrapTokenType, nil))
		refused, _ := asServiceAccount(t, e, saToken, "POST", path, "application/json", bootstrapSecretJSON(t, "kube-system", "Opaque", nil))
		if allowed == http.StatusCreated && refused == http.StatusForbidden {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after apply, a bootstrap-token Secret got %d (want 201) and an Opaque one %d (want 403)", allowed, refused)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
