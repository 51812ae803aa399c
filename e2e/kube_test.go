package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"
)

// secret is the part of a Kubernetes Secret the tests read; Data values
// arrive base64-encoded, which encoding/json decodes into []byte.
type secret struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Type string            `json:"type"`
	Data map[string][]byte `json:"data"`
}

const bootstrapTokenType = "bootstrap.kubernetes.io/token"

// bootstrapSecret returns the Secret kube-system/bootstrap-token-<id>.
func bootstrapSecret(t *testing.T, e *testEnv, id string) secret {
	t.Helper()
	var s secret
	apiGet(t, e, "/api/v1/namespaces/kube-system/secrets/bootstrap-token-"+id, &s)
	return s
}

// bootstrapSecrets returns every bootstrap-token Secret, by token id.
func bootstrapSecrets(t *testing.T, e *testEnv) map[string]secret {
	t.Helper()
	var list struct {
		Items []secret `json:"items"`
	}
	q := url.Values{"fieldSelector": {"type=" + bootstrapTokenType}}
	apiGet(t, e, "/api/v1/namespaces/kube-system/secrets?"+q.Encode(), &list)
	m := make(map[string]secret, len(list.Items))
	for _, s := range list.Items {
		m[string(s.Data["token-id"])] = s
	}
	return m
}

// authenticate asks the API server who the bearer of token is, over TLS
// that trusts the cluster CA and presents no client certificate. It returns
// the HTTP status, the username and the groups.
func authenticate(t *testing.T, e *testEnv, token string) (int, string, []string) {
	t.Helper()
	return authenticateAt(t, e.cp.API.URL(), e.cp.API.Client(false), token)
}

// authenticateAt is authenticate against the API server at apiURL, reached
// with client. A 401 is asked again until authPropagation has passed.
func authenticateAt(t *testing.T, apiURL string, client *http.Client, token string) (int, string, []string) {
	t.Helper()
	status, user, groups := reviewAt(t, apiURL, client, token)
	for deadline := time.Now().Add(authPropagation); status == http.StatusUnauthorized && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		status, user, groups = reviewAt(t, apiURL, client, token)
	}
	return status, user, groups
}

// reviewAt sends one SelfSubjectReview with token to the API server at
// apiURL and returns the status, the username and the groups.
func reviewAt(t *testing.T, apiURL string, client *http.Client, token string) (int, string, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		apiURL+"/apis/authentication.k8s.io/v1/selfsubjectreviews", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("SelfSubjectReview: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var review struct {
		Status struct {
			UserInfo struct {
				Username string   `json:"username"`
				Groups   []string `json:"groups"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &review); err != nil {
			t.Fatalf("SelfSubjectReview: %v: %s", err, b)
		}
	}
	return resp.StatusCode, review.Status.UserInfo.Username, review.Status.UserInfo.Groups
}

// authPropagation bounds how long a new token may take to authenticate: the
// API server's bootstrap-token authenticator reads Secrets from its informer
// cache, which a loaded API server fills a moment after the create (a
// joining kubeadm retries the same way).
const authPropagation = 10 * time.Second

// checkAuthenticates fails unless token authenticates as bootstrap token id.
func checkAuthenticates(t *testing.T, e *testEnv, token, id string) {
	t.Helper()
	status, user, groups := authenticate(t, e, token)
	if status != http.StatusCreated && status != http.StatusOK {
		t.Errorf("SelfSubjectReview with the token: status %d, want 201", status)
		return
	}
	if want := "system:bootstrap:" + id; user != want {
		t.Errorf("token authenticates as %q, want %q", user, want)
	}
	if !slices.Contains(groups, "system:bootstrappers") {
		t.Errorf("token's groups = %q, want system:bootstrappers among them", groups)
	}
}

// createNode makes a Node object (no kubelet needed) and removes it at the
// end of the test if it still exists.
func createNode(t *testing.T, e *testEnv, name string) {
	t.Helper()
	node := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]string{"name": name}}
	if status, body := apiDo(t, e, http.MethodPost, "/api/v1/nodes", node); status != http.StatusCreated {
		t.Fatalf("creating node %s: %d %s", name, status, body)
	}
	t.Cleanup(func() {
		if !e.cp.API.Running() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e.cp.API.Do(ctx, http.MethodDelete, "/api/v1/nodes/"+name, nil)
	})
}

// nodeExists reports whether the Node named name exists.
func nodeExists(t *testing.T, e *testEnv, name string) bool {
	t.Helper()
	status, body := apiDo(t, e, http.MethodGet, "/api/v1/nodes/"+name, nil)
	switch status {
	case http.StatusOK:
		return true
	case http.StatusNotFound:
		return false
	}
	t.Fatalf("GET node %s: %d %s", name, status, body)
	return false
}

// description is the token description the server must give host.
func description(host string) string {
	return fmt.Sprintf("Allow %s to join the cluster", host)
}
