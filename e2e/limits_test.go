package e2e

import (
	"net/http"
	"slices"
	"testing"
)

// newSecretIDs returns the ids in after that are not in before.
func newSecretIDs(before, after map[string]secret) []string {
	var ids []string
	for id := range after {
		if _, ok := before[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// TestAllowedSources runs the server with -allowed-sources and asks for a
// token from 127.0.0.1: refused with an empty 403 and no token made when
// loopback is outside the list, served when inside.
func TestAllowedSources(t *testing.T) {
	e := env(t)
	tests := []struct {
		name    string
		sources string
		want    int
	}{
		{"caller outside", "192.0.2.0/24", http.StatusForbidden},
		{"caller inside", "127.0.0.0/8", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := e.startServer(t, serverConfig{args: []string{"-allowed-sources", tc.sources}})
			const host = "mlab1-src01.mlab-sandbox.measurement-lab.org"
			before := bootstrapSecrets(t, e)
			got := post(t, s, "/v2/allocate_k8s_token", extensionBody(t, host, ""))
			if got.status != tc.want {
				t.Errorf("status = %d, want %d", got.status, tc.want)
			}
			created := newSecretIDs(before, bootstrapSecrets(t, e))

			if tc.want != http.StatusOK {
				if len(got.body) != 0 {
					t.Errorf("body = %q, want empty", got.body)
				}
				if len(created) != 0 {
					t.Errorf("new bootstrap tokens %q, want none for a refused caller", created)
				}
				// The other extension endpoints are closed to it too; the
				// health, readiness and metrics endpoints stay open.
				for _, path := range []string{"/v1/allocate_k8s_token", "/v1/bmc_store_password", "/v1/node/delete"} {
					got := post(t, s, path, extensionBody(t, host, "p=abc"))
					if got.status != tc.want || len(got.body) != 0 {
						t.Errorf("POST %s = %d %q, want %d and an empty body", path, got.status, got.body, tc.want)
					}
				}
				for _, path := range []string{"/", "/ready", "/metrics"} {
					if got := do(t, http.MethodGet, s.URL+path, nil); got.status != http.StatusOK {
						t.Errorf("GET %s = %d, want 200: only extension endpoints are restricted", path, got.status)
					}
				}
				return
			}
			if len(created) != 1 {
				t.Fatalf("new bootstrap tokens %q, want exactly one", created)
			}
			sec := bootstrapSecret(t, e, created[0])
			if got, want := string(sec.Data["description"]), description(host); got != want {
				t.Errorf("description = %q, want %q", got, want)
			}
		})
	}
}

// TestTokenBudget runs the server with -max-tokens-per-host 2: a host's
// third token in a row, whichever endpoint it asks, is refused with an empty
// 429 and makes no token, while another host is still served.
func TestTokenBudget(t *testing.T) {
	e := env(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		testTokenBudget(t, e, backend)
	})
}

func testTokenBudget(t *testing.T, e *testEnv, backend string) {
	s := e.startServer(t, serverConfig{backend: backend, args: []string{"-max-tokens-per-host", "2"}})
	const (
		host  = "mlab1-bud01.mlab-sandbox.measurement-lab.org"
		other = "mlab2-bud01.mlab-sandbox.measurement-lab.org"
	)
	steps := []struct {
		name string
		path string
		host string
		want int
	}{
		{"first", "/v2/allocate_k8s_token", host, http.StatusOK},
		{"second", "/v1/allocate_k8s_token", host, http.StatusOK},
		{"third", "/v2/allocate_k8s_token", host, http.StatusTooManyRequests},
		{"third on v1", "/v1/allocate_k8s_token", host, http.StatusTooManyRequests},
		{"another host", "/v2/allocate_k8s_token", other, http.StatusOK},
	}
	for _, st := range steps {
		// In order, not as independent subtests: each step depends on the
		// budget the previous ones spent.
		before := bootstrapSecrets(t, e)
		got := post(t, s, st.path, extensionBody(t, st.host, ""))
		created := newSecretIDs(before, bootstrapSecrets(t, e))
		if got.status != st.want {
			t.Errorf("%s (%s for %s): status = %d, want %d", st.name, st.path, st.host, got.status, st.want)
		}
		wantNew := 0
		if st.want == http.StatusOK {
			wantNew = 1
		} else if len(got.body) != 0 {
			t.Errorf("%s: body = %q, want empty", st.name, got.body)
		}
		if len(created) != wantNew {
			t.Errorf("%s: new bootstrap tokens %q, want %d", st.name, created, wantNew)
		}
	}
}
