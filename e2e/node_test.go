package e2e

import (
	"net/http"
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
