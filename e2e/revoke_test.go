package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestNodeDeleteRevokesTokens has a host get two tokens, then leave: after
// /v1/node/delete none of its bootstrap-token Secrets is left, and another
// host's token is untouched.
func TestNodeDeleteRevokesTokens(t *testing.T) {
	parallel(t)
	e := env(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		s := e.startServer(t, serverConfig{backend: backend, args: []string{"-max-tokens-per-host", "3"}})
		host := "mlab1-rev01.mlab-sandbox.measurement-lab.org-" + backend
		other := "mlab2-rev01.mlab-sandbox.measurement-lab.org-" + backend
		for _, h := range []string{host, host, other} {
			if got := post(t, s, "/v2/allocate_k8s_token", extensionBody(t, h, "")); got.status != http.StatusOK {
				t.Fatalf("token for %s: status %d", h, got.status)
			}
		}
		createNode(t, e, host)
		if got := post(t, s, "/v1/node/delete", extensionBody(t, host, "")); got.status != http.StatusOK {
			t.Fatalf("node delete: status %d", got.status)
		}
		if n := hostSecrets(t, e, host); n != 0 {
			t.Errorf("%d bootstrap-token Secrets left for %s after node delete, want 0", n, host)
		}
		if n := hostSecrets(t, e, other); n != 1 {
			t.Errorf("%d bootstrap-token Secrets for %s, want its 1 untouched", n, other)
		}
		if !containsLog(s, `"why":"node_delete"`) {
			t.Errorf("no log line for the revocation")
		}
	})
}

// TestRevokeOnReady runs the api backend and checks revocation by Node
// readiness: a Node named like the host that is Ready after its token was
// made leaves no token within 5 s; a token made while the host's Node is
// NotReady (a reboot) is still there 10 s later, and gone within 5 s of the
// Node turning Ready.
func TestRevokeOnReady(t *testing.T) {
	parallel(t)
	e := env(t)
	s := e.startServer(t, serverConfig{backend: "api", args: []string{"-max-tokens-per-host", "3"}})
	const joined, rebooted = "mlab1-rdy01.mlab-sandbox.measurement-lab.org", "mlab2-rdy01.mlab-sandbox.measurement-lab.org"

	t.Run("joined", func(t *testing.T) {
		if got := post(t, s, "/v2/allocate_k8s_token", extensionBody(t, joined, "")); got.status != http.StatusOK {
			t.Fatalf("token: status %d", got.status)
		}
		// The Secret's creation time has whole seconds: Ready a second later.
		createNodeWithReady(t, e, joined, "True", time.Now().Add(time.Second))
		start := time.Now()
		if took, ok := waitSecrets(t, e, joined, 0, 5*time.Second); !ok {
			t.Fatalf("tokens of %s still there %s after its Node turned Ready", joined, took)
		}
		t.Logf("revoked %s after the Ready Node appeared", time.Since(start).Round(time.Millisecond))
	})

	t.Run("rebooted", func(t *testing.T) {
		createNodeWithReady(t, e, rebooted, "False", time.Now().Add(-time.Minute))
		if got := post(t, s, "/v2/allocate_k8s_token", extensionBody(t, rebooted, "")); got.status != http.StatusOK {
			t.Fatalf("token: status %d", got.status)
		}
		time.Sleep(10 * time.Second)
		if n := hostSecrets(t, e, rebooted); n != 1 {
			t.Fatalf("%d tokens for %s 10 s after it got one while NotReady, want 1", n, rebooted)
		}
		setReady(t, e, rebooted, "True", time.Now().Add(time.Second))
		start := time.Now()
		if took, ok := waitSecrets(t, e, rebooted, 0, 5*time.Second); !ok {
			t.Fatalf("token of %s still there %s after its Node turned Ready", rebooted, took)
		}
		t.Logf("revoked %s after the Node turned Ready", time.Since(start).Round(time.Millisecond))
	})
	if !containsLog(s, `"why":"node_ready"`) {
		t.Errorf("no log line for the revocations")
	}
}

// hostSecrets counts the bootstrap-token Secrets that name host, expired or
// not.
func hostSecrets(t *testing.T, e *testEnv, host string) int {
	t.Helper()
	n := 0
	for _, s := range bootstrapSecrets(t, e) {
		if string(s.Data["description"]) == description(host) {
			n++
		}
	}
	return n
}

// waitSecrets waits up to timeout until host has want Secrets, and says
// how long it waited and whether it got there.
func waitSecrets(t *testing.T, e *testEnv, host string, want int, timeout time.Duration) (time.Duration, bool) {
	t.Helper()
	start := time.Now()
	for {
		if hostSecrets(t, e, host) == want {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createNodeWithReady creates Node name with its Ready condition, as a
// kubelet registering would, and deletes it at the end of the test.
func createNodeWithReady(t *testing.T, e *testEnv, name, status string, since time.Time) {
	t.Helper()
	createNode(t, e, name)
	setReady(t, e, name, status, since)
}

// setReady sets the Ready condition of Node name through its status.
func setReady(t *testing.T, e *testEnv, name, status string, since time.Time) {
	t.Helper()
	var node map[string]any
	apiGet(t, e, "/api/v1/nodes/"+name, &node)
	ts := since.UTC().Format(time.RFC3339)
	node["status"] = map[string]any{"conditions": []map[string]any{{
		"type": "Ready", "status": status, "reason": "E2E", "lastHeartbeatTime": ts, "lastTransitionTime": ts,
	}}}
	if code, body := apiDo(t, e, http.MethodPut, "/api/v1/nodes/"+name+"/status", node); code != http.StatusOK {
		t.Fatalf("setting Ready=%s on %s: %d %s", status, name, code, body)
	}
}

// containsLog reports whether the server's log holds s.
func containsLog(srv *Server, s string) bool {
	return strings.Contains(srv.Log(), s)
}
