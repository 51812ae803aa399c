package e2e

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

var tokenRE = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{16})$`)

// TestAllocateToken asks for tokens the way every caller does and checks
// each against the API server: the Secret kubeadm stored, and that the token
// really authenticates.
func TestAllocateToken(t *testing.T) {
	parallel(t)
	e := env(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		testAllocateToken(t, e, backend)
	})
}

func testAllocateToken(t *testing.T, e *testEnv, backend string) {
	const ttl = 3 * time.Minute // not the default, to see the flag is passed on
	s := e.startServer(t, serverConfig{backend: backend, args: []string{"-token-ttl", ttl.String()}})

	tests := []struct {
		name string
		path string
		host string // empty: a control-plane VM that sends no hostname
	}{
		{"v1 physical machine", "/v1/allocate_k8s_token", "mlab2-lga01.mlab-sandbox.measurement-lab.org"},
		{"v2 physical machine", "/v2/allocate_k8s_token", "mlab3-lga01.mlab-sandbox.measurement-lab.org"},
		{"v2 cloud VM", "/v2/allocate_k8s_token", "mlab1-chs0t.mlab-sandbox.measurement-lab.org"},
		{"v2 control plane without hostname", "/v2/allocate_k8s_token", ""},
		{"v1 without hostname", "/v1/allocate_k8s_token", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := time.Now()
			got := post(t, s, tc.path, extensionBody(t, tc.host, ""))
			after := time.Now()
			if got.status != http.StatusOK {
				t.Fatalf("status = %d, want 200 (body %q)", got.status, got.body)
			}

			token := string(got.body)
			if strings.HasPrefix(tc.path, "/v2/") {
				if want := "application/json; charset=utf-8"; got.contentType != want {
					t.Errorf("Content-Type = %q, want %q", got.contentType, want)
				}
				var join struct {
					APIAddress string `json:"api_address"`
					Token      string `json:"token"`
					CAHash     string `json:"ca_hash"`
				}
				if err := json.Unmarshal(got.body, &join); err != nil {
					t.Fatalf("body %q: %v", got.body, err)
				}
				if join.APIAddress != e.cp.API.Addr {
					t.Errorf("api_address = %q, want %q", join.APIAddress, e.cp.API.Addr)
				}
				if want := e.cp.PKI.CAHash(); join.CAHash != want {
					t.Errorf("ca_hash = %q, want %q (SHA-256 of the CA's SubjectPublicKeyInfo)", join.CAHash, want)
				}
				token = join.Token
			} else if want := "text/plain; charset=utf-8"; got.contentType != want {
				t.Errorf("Content-Type = %q, want %q", got.contentType, want)
			}

			m := tokenRE.FindStringSubmatch(token)
			if m == nil {
				t.Fatalf("token = %q, want ID.SECRET", token)
			}
			id, secretPart := m[1], m[2]
			sec := bootstrapSecret(t, e, id)
			if sec.Type != bootstrapTokenType {
				t.Errorf("Secret type = %q, want %q", sec.Type, bootstrapTokenType)
			}
			if got := string(sec.Data["token-secret"]); got != secretPart {
				t.Errorf("Secret token-secret differs from the token we got")
			}
			if got := string(sec.Data["usage-bootstrap-authentication"]); got != "true" {
				t.Errorf("usage-bootstrap-authentication = %q, want true", got)
			}
			desc := string(sec.Data["description"])
			if tc.host != "" && desc != description(tc.host) {
				t.Errorf("description = %q, want %q", desc, description(tc.host))
			}
			if tc.host == "" && desc == "" {
				t.Errorf("description is empty, want one that says the machine had no name")
			}
			checkExpiration(t, string(sec.Data["expiration"]), before.Add(ttl), after.Add(ttl))
			checkAuthenticates(t, e, token, id)
			if strings.Contains(s.Log(), secretPart) {
				t.Errorf("the token's secret appears in the server log")
			}
		})
	}
}

// checkExpiration fails unless the RFC 3339 time exp lies in [from, to],
// give or take the second kubeadm truncates to.
func checkExpiration(t *testing.T, exp string, from, to time.Time) {
	t.Helper()
	got, err := time.Parse(time.RFC3339, exp)
	if err != nil {
		t.Errorf("expiration %q: %v", exp, err)
		return
	}
	if got.Before(from.Add(-2*time.Second)) || got.After(to.Add(2*time.Second)) {
		t.Errorf("expiration = %s, want between %s and %s", got, from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
}

// TestRefusals sends requests the server must turn away before any backend
// runs, and checks that none reached the API server or Datastore.
func TestRefusals(t *testing.T) {
	parallel(t)
	// A control plane of its own: it counts every token in the cluster.
	e := privateEnv(t, true, false)
	forEachBackend(t, func(t *testing.T, backend string) {
		testRefusals(t, e, backend)
	})
}

func testRefusals(t *testing.T, e *testEnv, backend string) {
	s := e.startServer(t, serverConfig{backend: backend})
	const host = "mlab4-lga01.mlab-sandbox.measurement-lab.org"
	old := []byte(`{"v1":{"hostname":"` + host + `","last_boot":"2001-01-01T00:00:00Z"}}`)

	tests := []struct {
		name   string
		method string
		path   string
		body   []byte
		want   int
	}{
		{"GET token", http.MethodGet, "/v2/allocate_k8s_token", nil, http.StatusMethodNotAllowed},
		{"no v1", http.MethodPost, "/v2/allocate_k8s_token", []byte(`{}`), http.StatusBadRequest},
		{"not JSON", http.MethodPost, "/v1/allocate_k8s_token", []byte(`p=x`), http.StatusBadRequest},
		{"old boot", http.MethodPost, "/v2/allocate_k8s_token", old, http.StatusRequestTimeout},
		{"hostname is a flag", http.MethodPost, "/v2/allocate_k8s_token", extensionBody(t, "--all", ""), http.StatusBadRequest},
		{"bmc without password", http.MethodPost, "/v1/bmc_store_password", extensionBody(t, host, "q=1"), http.StatusBadRequest},
		{"bmc empty password", http.MethodPost, "/v1/bmc_store_password", extensionBody(t, host, "p="), http.StatusBadRequest},
		{"node without hostname", http.MethodPost, "/v1/node/delete", extensionBody(t, "", ""), http.StatusBadRequest},
	}
	before := len(bootstrapSecrets(t, e))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := do(t, tc.method, s.URL+tc.path, tc.body)
			if got.status != tc.want {
				t.Errorf("status = %d, want %d", got.status, tc.want)
			}
			if len(got.body) != 0 {
				t.Errorf("body = %q, want empty", got.body)
			}
		})
	}
	if after := len(bootstrapSecrets(t, e)); after != before {
		t.Errorf("bootstrap tokens: %d before the refused requests, %d after; want no new ones", before, after)
	}
	if _, err := loadCredentials(t, e, "mlab-sandbox", "mlab4d-lga01.mlab-sandbox.measurement-lab.org"); err == nil {
		t.Errorf("refused BMC requests stored credentials")
	}
}
