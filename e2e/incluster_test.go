package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestInCluster runs the server as deploy/epoxy-extensions.yaml does: it
// applies the manifest to the real API server, gives the server a token of
// the manifest's service account at the path a pod has it, and checks that
// tokens and node deletes work with -kube-backend=api and no kubeconfig,
// that the join details come from kube-public/cluster-info, and that the
// service account can do nothing else.
func TestInCluster(t *testing.T) {
	waiting(t)
	e := env(t)
	applyManifest(t, e, filepath.Join(e.root, deployManifest))
	saToken := serviceAccountToken(t, e, deployNS, deploySA)
	saDir := serviceAccountDir(t, e, saToken, deployNS)
	waitEnforced(t, e, saToken)

	// Before cluster-info exists.
	t.Run("exits without cluster-info", func(t *testing.T) {
		var out SyncBuffer
		e.serverBinary(t) // built before the clock starts
		start := time.Now()
		s, err := startInCluster(t, e, saDir, &out)
		if err == nil {
			s.Stop(30 * time.Second)
			t.Fatal("the server started without kube-public/cluster-info; want it to exit at start")
		}
		t.Logf("exited after %s", time.Since(start).Round(time.Millisecond))
		if !strings.Contains(err.Error(), "exited (exit status ") {
			t.Errorf("want a non-zero exit at start, got: %v", err)
		}
		line := logLine(out.String(), "could not set up the Kubernetes backend")
		if errText, _ := line["error"].(string); !strings.Contains(errText, "kube-public/cluster-info") {
			t.Errorf("want a log line naming kube-public/cluster-info, got %v\nlog:\n%s", line, out.String())
		}
	})

	// The join address differs from the in-cluster one (127.0.0.1): the
	// answer must come from cluster-info, as it does for kubeadm.
	_, port, _ := net.SplitHostPort(e.cp.API.Addr)
	joinAddr := net.JoinHostPort("api.e2e.example", port)
	publishClusterInfo(t, e, "https://"+joinAddr)
	s, err := startInCluster(t, e, saDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(90 * time.Second); err != nil {
			t.Errorf("stopping the server: %v", err)
		}
		if strings.Contains(s.Log(), saToken) {
			t.Errorf("the service account token appears in the server log")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.Log())
		}
	})
	line := logLine(s.Log(), "kube backend: api")
	want := map[string]any{"api_server": e.cp.API.URL(), "join_source": "kube-public/cluster-info", "join_api_address": joinAddr}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("start log %s = %v, want %v", k, line[k], v)
		}
	}

	t.Run("ready", func(t *testing.T) {
		// The service account may create Secrets in kube-system, as a
		// SelfSubjectAccessReview tells, which needs no permission itself.
		if got := do(t, http.MethodGet, s.URL+"/ready", nil); got.status != http.StatusOK {
			t.Errorf("GET /ready = %d, want 200\nlog:\n%s", got.status, s.Log())
		}
	})

	var tokenID string
	t.Run("token", func(t *testing.T) { tokenID = testInClusterToken(t, e, s, joinAddr) })

	t.Run("node delete", func(t *testing.T) {
		const leaving = "mlab1-inc01.mlab-sandbox.measurement-lab.org-x7k2"
		createNode(t, e, leaving)
		for _, round := range []string{"existing", "missing"} {
			got := post(t, s, "/v1/node/delete", extensionBody(t, leaving, ""))
			if got.status != http.StatusOK || len(got.body) != 0 {
				t.Errorf("%s node: got %d %q, want 200 and an empty body", round, got.status, got.body)
			}
			if nodeExists(t, e, leaving) {
				t.Errorf("%s node: %s still exists", round, leaving)
			}
		}
	})

	// Datastore needs no Kubernetes permission; the BMC's name resolves in
	// the server's private /etc/hosts, mounted along with the token.
	t.Run("bmc store", func(t *testing.T) {
		password := newPassword(t)
		got := post(t, s, "/v1/bmc_store_password", extensionBody(t, inClusterMachine, "p="+password))
		if got.status != http.StatusOK || len(got.body) != 0 {
			t.Fatalf("got %d %q, want 200 and an empty body", got.status, got.body)
		}
		checkCredentialsOf(t, e, bmcProject, inClusterBMC, bmcAddress, password)
	})

	t.Run("least privilege", func(t *testing.T) { testLeastPrivilege(t, e, saToken, tokenID) })

	t.Run("join details follow cluster-info", func(t *testing.T) {
		// As after a CA rotation or an API endpoint move: cluster-info is
		// rewritten, and the next tokens carry the new details.
		moved := net.JoinHostPort("api2.e2e.example", port)
		var cm map[string]any
		apiGet(t, e, "/api/v1/namespaces/kube-public/configmaps/cluster-info", &cm)
		data := cm["data"].(map[string]any)
		data["kubeconfig"] = strings.Replace(data["kubeconfig"].(string), joinAddr, moved, 1)
		if code, body := apiDo(t, e, http.MethodPut, "/api/v1/namespaces/kube-public/configmaps/cluster-info", cm); code != http.StatusOK {
			t.Fatalf("rewriting cluster-info: %d %s", code, body)
		}
		changed := time.Now()
		for i := 0; ; i++ {
			got := post(t, s, "/v2/allocate_k8s_token", extensionBody(t, fmt.Sprintf("mlab1-cai%02d.mlab-sandbox.measurement-lab.org", i), ""))
			var join joinDetails
			if got.status != http.StatusOK || json.Unmarshal(got.body, &join) != nil {
				t.Fatalf("token: %d %q", got.status, got.body)
			}
			if join.APIAddress == moved {
				t.Logf("tokens carry the new api_address %s after cluster-info changed", time.Since(changed).Round(time.Millisecond))
				break
			}
			if time.Since(changed) > 25*time.Second {
				t.Fatalf("api_address still %q 25 s after cluster-info changed to %q", join.APIAddress, moved)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if !strings.Contains(s.Log(), `"msg":"join details changed"`) {
			t.Errorf("no log line for the change")
		}
	})
}

// applyManifest validates every object of the manifest at path with a
// server-side dry run (schemas, admission, PodSecurity), then applies it for
// real, and removes it all at the end of the test. Nothing runs the
// Deployment: there is no scheduler, controller manager or kubelet.
func applyManifest(t *testing.T, e *testEnv, path string) {
	t.Helper()
	docs := manifestDocs(t, path)
	t.Cleanup(func() { removeManifest(t, e, path) })
	// A dry run creates nothing, so the namespaced objects of a dry run
	// would find no namespace: apply the Namespace first.
	for _, d := range docs {
		if strings.Contains(d, "\nkind: Namespace\n") {
			kubectl(t, e, []byte(d), "apply", "-f", "-")
		}
	}
	for _, args := range [][]string{{"apply", "--dry-run=server", "-f", path}, {"apply", "-f", path}} {
		out := kubectl(t, e, nil, args...)
		t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
		if strings.Contains(strings.ToLower(out), "warning") {
			t.Errorf("kubectl %s warned", strings.Join(args, " "))
		}
		if n := strings.Count(strings.TrimSpace(out), "\n") + 1; n != len(docs) {
			t.Errorf("kubectl %s: %d objects, want the manifest's %d", strings.Join(args, " "), n, len(docs))
		}
	}
	if out := kubectl(t, e, nil, "get", "-f", path, "-o", "name"); strings.Count(out, "\n") != len(docs) {
		t.Errorf("after apply, kubectl get -f finds:\n%s\nwant %d objects", out, len(docs))
	}
}

// testInClusterToken asks for a v2 token and checks the answer and the
// Secret; it returns the token id.
func testInClusterToken(t *testing.T, e *testEnv, s *Server, joinAddr string) string {
	const host = "mlab1-inc01.mlab-sandbox.measurement-lab.org"
	before := time.Now()
	got := post(t, s, "/v2/allocate_k8s_token", extensionBody(t, host, ""))
	after := time.Now()
	if got.status != http.StatusOK {
		t.Fatalf("status = %d, want 200 (body %q)", got.status, got.body)
	}
	var join joinDetails
	if err := json.Unmarshal(got.body, &join); err != nil {
		t.Fatalf("body %q: %v", got.body, err)
	}
	if join.APIAddress != joinAddr {
		t.Errorf("api_address = %q, want %q from cluster-info", join.APIAddress, joinAddr)
	}
	if want := e.cp.PKI.CAHash(); join.CAHash != want {
		t.Errorf("ca_hash = %q, want %q", join.CAHash, want)
	}
	m := tokenRE.FindStringSubmatch(join.Token)
	if m == nil {
		t.Fatalf("token = %q, want ID.SECRET", join.Token)
	}
	sec := bootstrapSecret(t, e, m[1])
	wantData := map[string]string{
		"token-id":                       m[1],
		"token-secret":                   m[2],
		"description":                    description(host),
		"auth-extra-groups":              "system:bootstrappers:kubeadm:default-node-token",
		"usage-bootstrap-authentication": "true",
		"usage-bootstrap-signing":        "true",
	}
	if sec.Type != bootstrapTokenType {
		t.Errorf("Secret type = %q, want %q", sec.Type, bootstrapTokenType)
	}
	for k, v := range wantData {
		if string(sec.Data[k]) != v {
			t.Errorf("Secret %s differs from what kubeadm writes", k) // may be the token secret: not shown
		}
	}
	if len(sec.Data) != len(wantData)+1 { // and expiration
		t.Errorf("Secret has %d keys, want %d", len(sec.Data), len(wantData)+1)
	}
	checkExpiration(t, string(sec.Data["expiration"]), before.Add(5*time.Minute), after.Add(5*time.Minute))
	checkAuthenticates(t, e, join.Token, m[1])
	if strings.Contains(s.Log(), m[2]) {
		t.Errorf("the token's secret appears in the server log")
	}
	return m[1]
}

// testLeastPrivilege checks, with the service account's own token, what the
// API server allows it: exactly what the server needs. Writes that should be
// refused are dry runs, so that a broken RBAC cannot change the cluster.
func testLeastPrivilege(t *testing.T, e *testEnv, saToken, tokenID string) {
	status, user, _ := authenticate(t, e, saToken)
	if want := "system:serviceaccount:" + deployNS + ":" + deploySA; status != http.StatusCreated || user != want {
		t.Fatalf("the token authenticates as %q (status %d), want %q", user, status, want)
	}
	if tokenID == "" {
		tokenID = "abcdef"
	}
	const bystander = "mlab2-inc01.mlab-sandbox.measurement-lab.org"
	createNode(t, e, bystander)
	// The admission policy refuses to delete a control-plane Node, which
	// RBAC allows: once loaded (the API server loads policies in the
	// background), always.
	const controlPlane = "mlab3-inc01.mlab-sandbox.measurement-lab.org"
	createLabelledNode(t, e, controlPlane, map[string]string{"node-role.kubernetes.io/control-plane": ""})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, body := asServiceAccount(t, e, saToken, "DELETE", "/api/v1/nodes/"+controlPlane+"?dryRun=All", "", nil)
		if code == http.StatusForbidden && strings.Contains(string(body), "control-plane") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after apply, deleting control-plane Node %s as the service account = %d %s, want 403 from the admission policy", controlPlane, code, body)
		}
	}
	// A Secret of another kind in kube-system, which the server may read
	// (RBAC cannot tell) but not delete (the admission policy can).
	const opaque = "e2e-opaque"
	if code, body := apiDo(t, e, http.MethodPost, "/api/v1/namespaces/kube-system/secrets",
		map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]string{"name": opaque}, "type": "Opaque"}); code != http.StatusCreated {
		t.Fatalf("creating Secret %s: %d %s", opaque, code, body)
	}
	t.Cleanup(func() { apiDo(t, e, http.MethodDelete, "/api/v1/namespaces/kube-system/secrets/"+opaque, nil) })
	const (
		jsonType  = "application/json"
		mergeType = "application/merge-patch+json"
		dryRun    = "?dryRun=All"
	)
	label := []byte(`{"metadata":{"labels":{"e2e-patched":"true"}}}`)
	tests := []struct {
		name, method, path, contentType string
		body                            []byte
		want                            int
	}{
		// What the server needs.
		{"get cluster-info", "GET", "/api/v1/namespaces/kube-public/configmaps/cluster-info", "", nil, 200},
		{"create bootstrap Secret in kube-system", "POST", "/api/v1/namespaces/kube-system/secrets" + dryRun, jsonType, bootstrapSecretJSON(t, "kube-system", bootstrapTokenType, nil), 201},
		{"delete a missing Node", "DELETE", "/api/v1/nodes/mlab9-none01.mlab-sandbox.measurement-lab.org", "", nil, 404},
		// RBAC cannot tell Secrets apart at create; the admission policy
		// refuses all but expiring node-joining bootstrap tokens.
		{"create Opaque Secret in kube-system", "POST", "/api/v1/namespaces/kube-system/secrets" + dryRun, jsonType, bootstrapSecretJSON(t, "kube-system", "Opaque", nil), 403},
		{"create a token that never expires", "POST", "/api/v1/namespaces/kube-system/secrets" + dryRun, jsonType, bootstrapSecretJSON(t, "kube-system", bootstrapTokenType, map[string]string{"expiration": ""}), 403},
		{"create a token for other groups", "POST", "/api/v1/namespaces/kube-system/secrets" + dryRun, jsonType, bootstrapSecretJSON(t, "kube-system", bootstrapTokenType, map[string]string{"auth-extra-groups": "system:bootstrappers:admins"}), 403},
		{"create a token Secret with another name", "POST", "/api/v1/namespaces/kube-system/secrets" + dryRun, jsonType, bootstrapSecretJSON(t, "kube-system", bootstrapTokenType, map[string]string{"name": "kubeadm-certs"}), 403},
		{"create a token without extra groups", "POST", "/api/v1/namespaces/kube-system/secrets" + dryRun, jsonType, bootstrapSecretJSON(t, "kube-system", bootstrapTokenType, map[string]string{"auth-extra-groups": ""}), 201},
		// The cache of bootstrap-token Secrets; RBAC cannot narrow a list
		// to one type, as it cannot narrow get.
		{"list bootstrap Secrets in kube-system", "GET", "/api/v1/namespaces/kube-system/secrets?fieldSelector=type%3Dbootstrap.kubernetes.io%2Ftoken", "", nil, 200},
		{"watch bootstrap Secrets in kube-system", "GET", "/api/v1/namespaces/kube-system/secrets?watch=1&timeoutSeconds=1&fieldSelector=type%3Dbootstrap.kubernetes.io%2Ftoken", "", nil, 200},
		// Nothing else.
		{"get the bootstrap Secret", "GET", "/api/v1/namespaces/kube-system/secrets/bootstrap-token-" + tokenID, "", nil, 200},
		{"patch the bootstrap Secret", "PATCH", "/api/v1/namespaces/kube-system/secrets/bootstrap-token-" + tokenID + dryRun, mergeType, label, 403},
		{"delete the bootstrap Secret", "DELETE", "/api/v1/namespaces/kube-system/secrets/bootstrap-token-" + tokenID + dryRun, "", nil, 200},
		{"delete an Opaque Secret in kube-system", "DELETE", "/api/v1/namespaces/kube-system/secrets/" + opaque + dryRun, "", nil, 403},
		{"delete every Secret in kube-system", "DELETE", "/api/v1/namespaces/kube-system/secrets" + dryRun, "", nil, 403},
		{"create Secret in default", "POST", "/api/v1/namespaces/default/secrets" + dryRun, jsonType, bootstrapSecretJSON(t, "default", bootstrapTokenType, nil), 403},
		{"create Secret in its own namespace", "POST", "/api/v1/namespaces/" + deployNS + "/secrets" + dryRun, jsonType, bootstrapSecretJSON(t, deployNS, "Opaque", nil), 403},
		{"list Nodes", "GET", "/api/v1/nodes", "", nil, 200},
		{"watch Nodes", "GET", "/api/v1/nodes?watch=1&timeoutSeconds=1", "", nil, 200},
		{"get a Node", "GET", "/api/v1/nodes/" + bystander, "", nil, 200},
		{"delete a Node", "DELETE", "/api/v1/nodes/" + bystander + dryRun, "", nil, 200},
		{"patch a Node", "PATCH", "/api/v1/nodes/" + bystander + dryRun, mergeType, label, 403},
		{"delete every Node", "DELETE", "/api/v1/nodes" + dryRun, "", nil, 403},
		{"list ConfigMaps in kube-public", "GET", "/api/v1/namespaces/kube-public/configmaps", "", nil, 403},
		{"get another ConfigMap in kube-public", "GET", "/api/v1/namespaces/kube-public/configmaps/kube-root-ca.crt", "", nil, 403},
		{"patch cluster-info", "PATCH", "/api/v1/namespaces/kube-public/configmaps/cluster-info" + dryRun, mergeType, label, 403},
		{"mint its own tokens", "POST", "/api/v1/namespaces/" + deployNS + "/serviceaccounts/" + deploySA + "/token", jsonType, []byte(`{"spec":{}}`), 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, body := asServiceAccount(t, e, saToken, tc.method, tc.path, tc.contentType, tc.body)
			if got != tc.want {
				t.Errorf("%s %s as the service account = %d, want %d: %s", tc.method, tc.path, got, tc.want, body)
			}
		})
	}
	if !nodeExists(t, e, bystander) {
		t.Errorf("node %s is gone", bystander)
	}
}
