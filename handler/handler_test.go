package handler

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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

func TestBMCStoresDerivedName(t *testing.T) {
	creds := &fakeCreds{}
	s, _ := testServer(&fakeTokens{}, &fakeNodes{}, creds, now)
	resp := do(t, s, "POST", "/v1/bmc_store_password", body(machine, now, "p="+password))
	if resp.StatusCode != 200 {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	want := hostname.BMC{Hostname: bmcHost, Project: "mlab-oti"}
	if len(creds.puts) != 1 || creds.puts[0] != want || creds.pass[0] != password {
		t.Errorf("stored %v %q, want %v %q", creds.puts, creds.pass, want, password)
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	const tokenSecret = "0000000000000001"
	for _, tc := range []struct {
		name  string
		creds *fakeCreds
		path  string
		body  string
	}{
		{"bmc-ok", &fakeCreds{}, "/v1/bmc_store_password", body(machine, now, "p="+password)},
		{"bmc-fails", &fakeCreds{err: errFake}, "/v1/bmc_store_password", body(machine, now, "p="+password)},
		{"bmc-refused-host", &fakeCreds{}, "/v1/bmc_store_password", body("mlab1.lga01.measurement-lab.org", now, "p="+password)},
		{"bmc-refused-old", &fakeCreds{}, "/v1/bmc_store_password", body(machine, now.Add(-time.Hour*5), "p="+password)},
		{"bmc-twice", &fakeCreds{}, "/v1/bmc_store_password", body(machine, now, "p="+password+"&p="+password)},
		{"token", &fakeCreds{}, "/v2/allocate_k8s_token", body(machine, now, "p="+password)},
		{"token-v1", &fakeCreds{}, "/v1/allocate_k8s_token", body(machine, now, "p="+password)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := testServer(&fakeTokens{}, &fakeNodes{}, tc.creds, now)
			do(t, s, "POST", tc.path, tc.body)
			out := logs.String()
			if out == "" {
				t.Fatal("nothing logged")
			}
			for _, secret := range []string{password, tokenSecret, "p="} {
				if strings.Contains(out, secret) {
					t.Errorf("log contains %q:\n%s", secret, out)
				}
			}
		})
	}
}

func TestConcurrentTokensGoToTheirOwnHost(t *testing.T) {
	tokens := &fakeTokens{delay: time.Millisecond}
	s, _ := testServer(tokens, &fakeNodes{}, &fakeCreds{}, time.Now())
	srv := httptest.NewServer(NewMux(s, prometheus.NewRegistry()))
	defer srv.Close()

	const n = 200
	got := make([]joincmd.Join, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			host := fmt.Sprintf("node-%03d.example.org", i)
			resp, err := http.Post(srv.URL+"/v2/allocate_k8s_token", "", strings.NewReader(body(host, time.Now(), "")))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("%s: status %d", host, resp.StatusCode)
				return
			}
			if err := json.NewDecoder(resp.Body).Decode(&got[i]); err != nil {
				errs <- fmt.Errorf("%s: %w", host, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	seen := map[string]bool{}
	for i, j := range got {
		host := fmt.Sprintf("node-%03d.example.org", i)
		if owner := tokens.issued[j.Token]; owner != host {
			t.Errorf("%s received token %q made for %q", host, j.Token, owner)
		}
		if seen[j.Token] {
			t.Errorf("token %q handed out twice", j.Token)
		}
		seen[j.Token] = true
	}
}

func TestFailuresAreCounted(t *testing.T) {
	s, _ := testServer(&fakeTokens{fail: true}, &fakeNodes{}, &fakeCreds{err: fmt.Errorf("%w: x", hostname.ErrResolve)}, now)
	refusals := metrics.Refusals.WithLabelValues(endpointNode, "hostname")
	kubeadm := metrics.BackendFailures.WithLabelValues("kubeadm")
	dns := metrics.BackendFailures.WithLabelValues("dns")
	before := []float64{testutil.ToFloat64(refusals), testutil.ToFloat64(kubeadm), testutil.ToFloat64(dns)}
	do(t, s, "POST", "/v1/node/delete", body("--all", now, ""))
	do(t, s, "POST", "/v2/allocate_k8s_token", body(machine, now, ""))
	do(t, s, "POST", "/v1/bmc_store_password", body(machine, now, "p="+password))
	after := []float64{testutil.ToFloat64(refusals), testutil.ToFloat64(kubeadm), testutil.ToFloat64(dns)}
	for i, name := range []string{"refusals{node_delete,hostname}", "backend_failures{kubeadm}", "backend_failures{dns}"} {
		if after[i]-before[i] != 1 {
			t.Errorf("%s went from %v to %v, want +1", name, before[i], after[i])
		}
	}
}
