package handler

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

const (
	machine  = "mlab1-lga01.mlab-oti.measurement-lab.org"
	bmcHost  = "mlab1d-lga01.mlab-oti.measurement-lab.org"
	password = "abcABC1234567890abcd"
)

// do sends one request through a mux built on s and returns the response.
func do(t *testing.T, s *Server, method, path, reqBody string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(method, path, strings.NewReader(reqBody))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded") // as curl sends it
	NewMux(s, prometheus.NewRegistry()).ServeHTTP(rec, r)
	return rec.Result()
}

func TestEndpoints(t *testing.T) {
	recent := now.Add(-time.Minute)
	tests := []struct {
		name        string
		method      string
		path        string
		body        string
		tokens      *fakeTokens
		nodes       *fakeNodes
		creds       *fakeCreds
		wantCode    int
		wantType    string
		wantBody    string // exact, unless wantJSON
		wantJSON    bool
		wantBackend bool // whether the backend must have been called
	}{
		{name: "v1-token", path: "/v1/allocate_k8s_token", body: body(machine, recent, ""),
			wantCode: 200, wantType: "text/plain; charset=utf-8", wantBody: "000001.0000000000000001", wantBackend: true},
		{name: "v2-token", path: "/v2/allocate_k8s_token", body: body(machine, recent, ""),
			wantCode: 200, wantType: "application/json; charset=utf-8", wantJSON: true, wantBackend: true},
		{name: "v2-token-no-hostname", path: "/v2/allocate_k8s_token", body: `{"v1":{"last_boot":"` + recent.Format(time.RFC3339) + `"}}`,
			wantCode: 200, wantType: "application/json; charset=utf-8", wantJSON: true, wantBackend: true},
		{name: "v1-token-get", method: "GET", path: "/v1/allocate_k8s_token", wantCode: 405},
		{name: "v2-token-bad-body", path: "/v2/allocate_k8s_token", body: "{}", wantCode: 400},
		{name: "v2-token-old-boot", path: "/v2/allocate_k8s_token", body: body(machine, now.Add(-3*time.Hour), ""), wantCode: 408},
		{name: "v2-token-hostile-host", path: "/v2/allocate_k8s_token", body: body("-lfoo=bar", recent, ""), wantCode: 400},
		{name: "v2-token-kubeadm-fails", path: "/v2/allocate_k8s_token", body: body(machine, recent, ""),
			tokens: &fakeTokens{fail: true}, wantCode: 500, wantBackend: true},
		{name: "node-delete", path: "/v1/node/delete", body: body(machine+"-d9h6", recent, ""), wantCode: 200, wantBackend: true},
		{name: "node-delete-all", path: "/v1/node/delete", body: body("--all", recent, ""), wantCode: 400},
		{name: "node-delete-A", path: "/v1/node/delete", body: body("-A", recent, ""), wantCode: 400},
		{name: "node-delete-space", path: "/v1/node/delete", body: body("a b", recent, ""), wantCode: 400},
		{name: "node-delete-semicolon", path: "/v1/node/delete", body: body("a;rm", recent, ""), wantCode: 400},
		{name: "node-delete-upper", path: "/v1/node/delete", body: body("MLAB1", recent, ""), wantCode: 400},
		{name: "node-delete-300", path: "/v1/node/delete", body: body(strings.Repeat("a.", 150), recent, ""), wantCode: 400},
		{name: "node-delete-no-host", path: "/v1/node/delete", body: body("", recent, ""), wantCode: 400},
		{name: "node-delete-kubectl-fails", path: "/v1/node/delete", body: body(machine, recent, ""),
			nodes: &fakeNodes{fail: true}, wantCode: 500, wantBackend: true},
		{name: "node-delete-get", method: "GET", path: "/v1/node/delete", wantCode: 405},
		{name: "bmc", path: "/v1/bmc_store_password", body: body(machine, recent, "p="+password), wantCode: 200, wantBackend: true},
		{name: "bmc-no-p", path: "/v1/bmc_store_password", body: body(machine, recent, "q=1"), wantCode: 400},
		{name: "bmc-empty-p", path: "/v1/bmc_store_password", body: body(machine, recent, "p="), wantCode: 400},
		{name: "bmc-vm-name", path: "/v1/bmc_store_password", body: body(machine+"-d9h6", recent, "p="+password), wantCode: 400},
		{name: "bmc-no-host", path: "/v1/bmc_store_password", body: body("", recent, "p="+password), wantCode: 400},
		{name: "bmc-old-boot", path: "/v1/bmc_store_password", body: body(machine, now.Add(-3*time.Hour), "p="+password), wantCode: 408},
		{name: "bmc-datastore-fails", path: "/v1/bmc_store_password", body: body(machine, recent, "p="+password),
			creds: &fakeCreds{err: errFake}, wantCode: 500, wantBackend: true},
		{name: "bmc-dns-fails", path: "/v1/bmc_store_password", body: body(machine, recent, "p="+password),
			creds: &fakeCreds{err: fmt.Errorf("%w: nxdomain", hostname.ErrResolve)}, wantCode: 500, wantBackend: true},
		{name: "bmc-v1-name-without-project", path: "/v1/bmc_store_password", body: body("mlab1.lga01.measurement-lab.org", recent, "p="+password),
			creds: &fakeCreds{err: fmt.Errorf("%w: no project", hostname.ErrNotMachine)}, wantCode: 400, wantBackend: true},
		{name: "bmc-get", method: "GET", path: "/v1/bmc_store_password", wantCode: 405},
		{name: "health", method: "GET", path: "/", wantCode: 200, wantType: "text/plain; charset=utf-8", wantBody: Health},
		{name: "unknown-path", method: "GET", path: "/v3/allocate_k8s_token", wantCode: 404, wantBody: "404 page not found\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tokens, nodes, creds := tc.tokens, tc.nodes, tc.creds
			if tokens == nil {
				tokens = &fakeTokens{}
			}
			if nodes == nil {
				nodes = &fakeNodes{}
			}
			if creds == nil {
				creds = &fakeCreds{}
			}
			s, _ := testServer(tokens, nodes, creds, now)
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			resp := do(t, s, method, tc.path, tc.body)
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantCode {
				t.Fatalf("%s %s = %d, want %d", method, tc.path, resp.StatusCode, tc.wantCode)
			}
			if ct := resp.Header.Get("Content-Type"); tc.wantType != "" && ct != tc.wantType {
				t.Errorf("Content-Type = %q, want %q", ct, tc.wantType)
			}
			if tc.wantJSON {
				var j joincmd.Join
				if err := json.Unmarshal(got, &j); err != nil || j.Token == "" || j.CAHash == "" || j.APIAddress == "" {
					t.Errorf("body %q is not a complete join JSON (err %v)", got, err)
				}
			} else if string(got) != tc.wantBody {
				t.Errorf("body = %q, want %q", got, tc.wantBody)
			}
			if tc.wantCode == 405 && resp.Header.Get("Allow") != "POST" {
				t.Errorf("405 without Allow: POST")
			}
			called := tokens.calls + len(nodes.names) + len(creds.puts)
			if (called > 0) != tc.wantBackend {
				t.Errorf("backend calls = %d, want called = %v", called, tc.wantBackend)
			}
		})
	}
}

func TestIsHealthCheck(t *testing.T) {
	tests := []struct {
		method, path string
		want         bool
	}{
		{"GET", "/", true},
		{"GET", "/ready", true},
		{"GET", "/metrics", true},
		{"POST", "/", false},
		{"POST", "/v2/allocate_k8s_token", false},
		{"GET", "/v1/node/delete", false},
		{"GET", "/metrics/x", false},
	}
	for _, tc := range tests {
		r := httptest.NewRequest(tc.method, tc.path, nil)
		if got := IsHealthCheck(r); got != tc.want {
			t.Errorf("IsHealthCheck(%s %s) = %t, want %t", tc.method, tc.path, got, tc.want)
		}
	}
}

// TestBackendFailuresByName checks that a failing backend is counted and
// logged under the name it gives itself (Backend), read by NewMux; the
// revoker and credential store included. TestBackendErrors (package main)
// does the same with the real backends.
func TestBackendFailuresByName(t *testing.T) {
	const tokenPath, nodePath, bmcPath = "/v2/allocate_k8s_token", "/v1/node/delete", "/v1/bmc_store_password"
	tests := []struct {
		name    string
		tokens  *fakeTokens
		nodes   *fakeNodes
		creds   *fakeCreds
		revoker *fakeRevoker
		path    string
		want    string
	}{
		{name: "token backend", tokens: &fakeTokens{named: "kube_api", fail: true}, path: tokenPath, want: "kube_api"},
		{name: "node backend", nodes: &fakeNodes{named: "kube_api", fail: true}, path: nodePath, want: "kube_api"},
		{name: "another name", nodes: &fakeNodes{named: "test_backend", fail: true}, path: nodePath, want: "test_backend"},
		{name: "revoker", revoker: &fakeRevoker{named: "test_revoker", err: errFake}, path: nodePath, want: "test_revoker"},
		{name: "credential store", creds: &fakeCreds{named: "datastore", err: errFake}, path: bmcPath, want: "datastore"},
		{name: "credential store's DNS", creds: &fakeCreds{named: "datastore", err: fmt.Errorf("%w x: no such host", hostname.ErrResolve)},
			path: bmcPath, want: "dns"},
	}
	names := []string{"kube_api", "kubectl", "test_backend", "test_revoker", "datastore", "dns"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tokens, nodes, creds := cmp.Or(tc.tokens, &fakeTokens{}), cmp.Or(tc.nodes, &fakeNodes{}), cmp.Or(tc.creds, &fakeCreds{})
			s, logs := testServer(tokens, nodes, creds, now)
			if tc.revoker != nil {
				s.Revoker = tc.revoker
			}
			before := map[string]float64{}
			for _, n := range names {
				before[n] = testutil.ToFloat64(metrics.BackendFailures.WithLabelValues(n))
			}

			resp := do(t, s, "POST", tc.path, body(machine, now, "p="+password))

			if resp.StatusCode != 500 {
				t.Errorf("POST %s = %d, want 500", tc.path, resp.StatusCode)
			}
			for _, n := range names {
				want := 0.0
				if n == tc.want {
					want = 1
				}
				if got := testutil.ToFloat64(metrics.BackendFailures.WithLabelValues(n)) - before[n]; got != want {
					t.Errorf("backend_failures{%s} went up by %v, want %v", n, got, want)
				}
			}
			if want := `"backend":"` + tc.want + `"`; !strings.Contains(logs.String(), want) {
				t.Errorf("log has no %s:\n%s", want, logs)
			}
		})
	}
}
