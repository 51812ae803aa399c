package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// TestNodeDelete removes nodes as leaving VMs do, and makes sure no name can
// reach kubectl as a flag: `kubectl delete node --all` would empty the
// cluster.
func TestNodeDelete(t *testing.T) {
	parallel(t)
	e := env(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		testNodeDelete(t, e, backend)
	})
}

func testNodeDelete(t *testing.T, e *testEnv, backend string) {
	s := e.startServer(t, serverConfig{backend: backend})
	const leaving = "mlab1-lga01.mlab-oti.measurement-lab.org-d9h6"
	others := []string{
		"mlab2-nod01.mlab-sandbox.measurement-lab.org",
		"mlab3-nod01.mlab-sandbox.measurement-lab.org",
		"all", // a bare word that is no flag: deleting "--all" must not touch it
	}
	for _, n := range append(others, leaving) {
		createNode(t, e, n)
	}
	checkOthers := func(t *testing.T) {
		t.Helper()
		for _, n := range others {
			if !nodeExists(t, e, n) {
				t.Errorf("node %s was deleted, want it kept", n)
			}
		}
	}

	t.Run("delete", func(t *testing.T) {
		got := post(t, s, "/v1/node/delete", extensionBody(t, leaving, ""))
		if got.status != http.StatusOK || len(got.body) != 0 {
			t.Fatalf("got %d %q, want 200 and an empty body", got.status, got.body)
		}
		if nodeExists(t, e, leaving) {
			t.Errorf("node %s still exists", leaving)
		}
		checkOthers(t)
	})

	t.Run("delete again", func(t *testing.T) {
		got := post(t, s, "/v1/node/delete", extensionBody(t, leaving, ""))
		if got.status != http.StatusOK {
			t.Errorf("status = %d, want 200: a missing node counts as deleted", got.status)
		}
		checkOthers(t)
	})

	for _, name := range []string{"--all", "-A", "--all=true", "-l", "--selector=x", "all nodes", "--", "-"} {
		t.Run("refuse "+name, func(t *testing.T) {
			got := post(t, s, "/v1/node/delete", extensionBody(t, name, ""))
			if got.status != http.StatusBadRequest {
				t.Errorf("status = %d, want 400", got.status)
			}
			checkOthers(t)
		})
	}
}

// TestControlPlaneNodeKept: the server never deletes a control-plane Node,
// whoever asks: 403 with an empty body, the Node still there, on both
// backends.
func TestControlPlaneNodeKept(t *testing.T) {
	parallel(t)
	e := env(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		s := e.startServer(t, serverConfig{backend: backend})
		name := "mlab1-cp" + backend[:1] + "01.mlab-sandbox.measurement-lab.org"
		createLabelledNode(t, e, name, map[string]string{"node-role.kubernetes.io/control-plane": ""})
		got := post(t, s, "/v1/node/delete", extensionBody(t, name, ""))
		if got.status != http.StatusForbidden || len(got.body) != 0 {
			t.Errorf("deleting control-plane node %s = %d %q, want 403 and an empty body", name, got.status, got.body)
		}
		if !nodeExists(t, e, name) {
			t.Errorf("control-plane node %s was deleted", name)
		}
		if !strings.Contains(s.Log(), `"reason":"control_plane_node"`) || !strings.Contains(s.Log(), `"remote":"127.0.0.1:`) {
			t.Errorf("the refusal is not logged with its reason and the caller:\n%s", s.Log())
		}
	})
}

// createLabelledNode is createNode with labels.
func createLabelledNode(t *testing.T, e *testEnv, name string, labels map[string]string) {
	t.Helper()
	node := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": name, "labels": labels}}
	if status, body := apiDo(t, e, http.MethodPost, "/api/v1/nodes", node); status != http.StatusCreated {
		t.Fatalf("creating node %s: %d %s", name, status, body)
	}
	t.Cleanup(func() {
		if e.cp.API.Running() {
			apiDo(t, e, http.MethodDelete, "/api/v1/nodes/"+name, nil)
		}
	})
}
