package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
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

// fakeRevoker records the hosts whose tokens it was asked to revoke.
type fakeRevoker struct {
	named
	n     int
	err   error
	hosts []string
}

func (f *fakeRevoker) Revoke(ctx context.Context, host string, notAfter time.Time) (int, error) {
	f.hosts = append(f.hosts, host)
	return f.n, f.err
}

func TestNodeDeleteRevokesTokens(t *testing.T) {
	tests := []struct {
		name  string
		nodes *fakeNodes
		rev   *fakeRevoker
		want  int
		calls int
	}{
		{name: "revoked", nodes: &fakeNodes{}, rev: &fakeRevoker{n: 2}, want: 200, calls: 1},
		{name: "revocation fails", nodes: &fakeNodes{}, rev: &fakeRevoker{err: errFake}, want: 500, calls: 1},
		{name: "node delete fails: tokens kept for the retry", nodes: &fakeNodes{fail: true}, rev: &fakeRevoker{}, want: 500},
		{name: "control-plane node: 403, tokens kept", nodes: &fakeNodes{err: fmt.Errorf("node x: %w", errProtected{})}, rev: &fakeRevoker{}, want: 403},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := testServer(&fakeTokens{}, tc.nodes, &fakeCreds{}, now)
			s.Revoker = tc.rev
			if got := do(t, s, "POST", "/v1/node/delete", body(machine, now, "")).StatusCode; got != tc.want {
				t.Errorf("status = %d, want %d", got, tc.want)
			}
			if len(tc.rev.hosts) != tc.calls || (tc.calls > 0 && tc.rev.hosts[0] != machine) {
				t.Errorf("revoked for %q, want %d calls for %s", tc.rev.hosts, tc.calls, machine)
			}
		})
	}
}

// TestControlPlaneNodeRefused: a node backend's refusal of a control-plane
// Node is an empty 403, logged with the caller and counted as a refusal.
func TestControlPlaneNodeRefused(t *testing.T) {
	s, logs := testServer(&fakeTokens{}, &fakeNodes{err: fmt.Errorf("node %s: %w", machine, errProtected{})}, &fakeCreds{}, now)
	before := testutil.ToFloat64(metrics.Refusals.WithLabelValues(endpointNode, "control_plane_node"))
	resp := do(t, s, "POST", "/v1/node/delete", body(machine, now, ""))
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 403 || len(b) != 0 {
		t.Errorf("delete of a control-plane node = %d %q, want 403 and no body", resp.StatusCode, b)
	}
	if got := testutil.ToFloat64(metrics.Refusals.WithLabelValues(endpointNode, "control_plane_node")) - before; got != 1 {
		t.Errorf("control_plane_node refusals rose by %v, want 1", got)
	}
	if log := logs.String(); !strings.Contains(log, `"reason":"control_plane_node"`) || !strings.Contains(log, `"remote":"192.0.2.1:1234"`) ||
		!strings.Contains(log, machine) {
		t.Errorf("log %s, want the refusal with the caller and the name", log)
	}
}

// fakeIdentity answers every Verify with err, and records the calls.
type fakeIdentity struct {
	err   error
	calls []string
}

func (f *fakeIdentity) Verify(_ context.Context, authorization, host string) error {
	f.calls = append(f.calls, host)
	return f.err
}

// identityError is how the identity check names its refusals.
type identityError string

func (e identityError) Error() string { return string(e) }

func (e identityError) RefusalReason() string { return string(e) }

// TestTrustedProxies: with -trusted-proxies set, a direct caller may store
// no BMC password, deletes only its own Node (the backend is told its
// address), and proves its identity for a token; a trusted proxy speaks for
// any machine. Every refusal reaches no backend and has an empty body.
func TestTrustedProxies(t *testing.T) {
	const proxy, vm = "10.0.0.5:4000", "10.128.0.7:5000"
	tests := []struct {
		name      string
		remote    string
		path      string
		query     string
		identity  error
		want      int
		reason    string
		backend   bool   // the backend was reached
		owner     string // the address the node backend must check
		checkedID bool   // the identity was checked
	}{
		{name: "proxy stores a BMC password", remote: proxy, path: "/v1/bmc_store_password", query: "p=" + password, want: 200, backend: true},
		{name: "direct caller may not", remote: vm, path: "/v1/bmc_store_password", query: "p=" + password, want: 403, reason: "not_trusted"},
		{name: "proxy deletes any node", remote: proxy, path: "/v1/node/delete", want: 200, backend: true},
		{name: "direct caller: its own node only", remote: vm, path: "/v1/node/delete", want: 200, backend: true, owner: "10.128.0.7"},
		{name: "proxy asks a token unchecked", remote: proxy, path: "/v2/allocate_k8s_token", identity: identityError("identity_missing"), want: 200, backend: true},
		{name: "direct caller with an identity", remote: vm, path: "/v2/allocate_k8s_token", want: 200, backend: true, checkedID: true},
		{name: "direct caller without", remote: vm, path: "/v2/allocate_k8s_token", identity: identityError("identity_missing"), want: 401, reason: "identity_missing", checkedID: true},
		{name: "direct caller, invalid", remote: vm, path: "/v1/allocate_k8s_token", identity: identityError("identity_invalid"), want: 401, reason: "identity_invalid", checkedID: true},
		{name: "keys unavailable", remote: vm, path: "/v2/allocate_k8s_token", identity: identityError("identity_unavailable"), want: 503, reason: "identity_unavailable", checkedID: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tokens, nodes, creds := &fakeTokens{}, &fakeNodes{}, &fakeCreds{}
			s, _ := testServer(tokens, nodes, creds, now)
			s.Validator.TrustedProxies, _ = ParseSources("10.0.0.5")
			id := &fakeIdentity{err: tc.identity}
			s.Identity = id
			r := httptest.NewRequest("POST", tc.path, strings.NewReader(body(machine, now, tc.query)))
			r.RemoteAddr = tc.remote
			rec := httptest.NewRecorder()
			NewMux(s, prometheus.NewRegistry()).ServeHTTP(rec, r)
			if rec.Code != tc.want || (tc.want != 200 && rec.Body.Len() != 0) {
				t.Errorf("%s from %s = %d %q, want %d and no body", tc.path, tc.remote, rec.Code, rec.Body, tc.want)
			}
			if tc.reason != "" {
				if got := testutil.ToFloat64(metrics.Refusals.WithLabelValues(endpointFor(tc.path), tc.reason)); got < 1 {
					t.Errorf("refusals{%s} = %v, want counted", tc.reason, got)
				}
			}
			if got := rec.Header().Get("WWW-Authenticate"); (tc.want == 401) != (got != "") {
				t.Errorf("WWW-Authenticate = %q for a %d", got, tc.want)
			}
			reached := tokens.calls > 0 || len(nodes.names) > 0 || len(creds.puts) > 0
			if reached != tc.backend {
				t.Errorf("backend reached = %v, want %v", reached, tc.backend)
			}
			if len(nodes.owners) > 0 {
				// A trusted proxy's delete carries no owner (the zero Addr).
				want := netip.Addr{}
				if tc.owner != "" {
					want = netip.MustParseAddr(tc.owner)
				}
				if nodes.owners[0] != want {
					t.Errorf("node backend told owner %v, want %v", nodes.owners[0], want)
				}
			}
			if (len(id.calls) > 0) != tc.checkedID {
				t.Errorf("identity checked = %v, want %v", len(id.calls) > 0, tc.checkedID)
			}
		})
	}
}

func endpointFor(path string) string {
	return map[string]string{"/v1/bmc_store_password": endpointBMC, "/v1/node/delete": endpointNode,
		"/v1/allocate_k8s_token": endpointTokenV1, "/v2/allocate_k8s_token": endpointTokenV2}[path]
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
