package handler

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

func TestSources(t *testing.T) {
	s, err := ParseSources(" 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,")
	if err != nil {
		t.Fatalf("ParseSources() error = %v", err)
	}
	tests := []struct {
		remote string
		want   bool
	}{
		{"10.1.2.3:5000", true},
		{"192.0.2.7:80", true},
		{"192.0.2.8:80", false},
		{"[::ffff:10.9.9.9]:1", true},
		{"[2001:db8::1]:443", true},
		{"[2001:db9::1]:443", false},
		{"127.0.0.1:1", false},
		{"garbage", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := s.Allows(tc.remote); got != tc.want {
			t.Errorf("Allows(%q) = %v, want %v", tc.remote, got, tc.want)
		}
	}
	if !(Sources{}).Allows("garbage") {
		t.Error("empty Sources refused a caller, want everyone allowed")
	}
	for _, bad := range []string{"10.0.0.0/33", "example.org", "10.0.0.1/8/1"} {
		if _, err := ParseSources(bad); err == nil {
			t.Errorf("ParseSources(%q) = nil error, want one", bad)
		}
	}
}

// TestDefaultSources: an empty -allowed-sources admits private and local
// callers only; "any" admits everyone.
func TestDefaultSources(t *testing.T) {
	private, err := ParseSources(" ")
	if err != nil {
		t.Fatalf("ParseSources(\" \") error = %v", err)
	}
	anySource, err := ParseSources(AnySource)
	if err != nil {
		t.Fatalf("ParseSources(%q) error = %v", AnySource, err)
	}
	tests := []struct {
		remote      string
		wantPrivate bool
	}{
		{"10.0.0.1:1", true},
		{"10.255.255.255:1", true},
		{"172.16.0.1:1", true},
		{"172.31.255.254:1", true},
		{"172.32.0.1:1", false},
		{"192.168.1.1:1", true},
		{"192.169.0.1:1", false},
		{"100.64.0.1:1", true},
		{"100.127.255.255:1", true},
		{"100.128.0.1:1", false},
		{"127.0.0.1:1", true},
		{"127.0.88.1:8800", true},
		{"[::1]:1", true},
		{"[fc00::1]:1", true},
		{"[fd12:3456::1]:1", true},
		{"[::ffff:10.1.2.3]:1", true},
		{"[::ffff:198.51.100.1]:1", false},
		{"198.51.100.1:1", false},
		{"8.8.8.8:53", false},
		{"[2001:db8::1]:1", false},
		{"[fe80::1]:1", false},
		{"0.0.0.0:1", false},
	}
	for _, tc := range tests {
		if got := private.Allows(tc.remote); got != tc.wantPrivate {
			t.Errorf("default Allows(%q) = %v, want %v", tc.remote, got, tc.wantPrivate)
		}
		if !anySource.Allows(tc.remote) {
			t.Errorf("%q Allows(%q) = false, want true", AnySource, tc.remote)
		}
	}
	if private.AllowsAny() {
		t.Error("the default sources AllowsAny() = true, want false")
	}
	if !anySource.AllowsAny() {
		t.Errorf("%q AllowsAny() = false, want true", AnySource)
	}
	if s, _ := ParseSources("0.0.0.0/0"); s.AllowsAny() {
		t.Error("0.0.0.0/0 AllowsAny() = true, want false: IPv6 is not admitted")
	}
}

func TestSourceRefusedBeforeBodyRead(t *testing.T) {
	tokens := &fakeTokens{}
	s, _ := testServer(tokens, &fakeNodes{}, &fakeCreds{}, now)
	s.Validator.Sources, _ = ParseSources("10.0.0.0/8")
	r := httptest.NewRequest("POST", "/v2/allocate_k8s_token", failingReader{t})
	r.RemoteAddr = "203.0.113.9:4444"
	rec := httptest.NewRecorder()
	NewMux(s, prometheus.NewRegistry()).ServeHTTP(rec, r)
	if rec.Code != http.StatusForbidden || rec.Body.Len() != 0 {
		t.Errorf("got %d %q, want 403 and an empty body", rec.Code, rec.Body)
	}
	if tokens.calls != 0 {
		t.Errorf("kubeadm called %d times for a refused source", tokens.calls)
	}
}

// failingReader fails the test if the body is read.
type failingReader struct{ t *testing.T }

func (f failingReader) Read([]byte) (int, error) {
	f.t.Error("body read for a refused source")
	return 0, io.EOF
}

// errTokens fails every Create with err.
type errTokens struct{ err error }

func (e errTokens) Create(ctx context.Context, host string) (joincmd.Join, error) {
	return joincmd.Join{}, e.err
}

// limitError is a token limit reached, as token.LimitError reports one: the
// handler knows it by its RetryTime method.
type limitError struct{ at time.Time }

func (e limitError) Error() string        { return "host holds its most live join tokens" }
func (e limitError) RetryTime() time.Time { return e.at }

// overloadError is an overload, as command.ErrBusy and kube.ErrOverloaded
// report one: the handler knows it by its Overloaded method.
type overloadError struct{}

func (overloadError) Error() string    { return "overloaded" }
func (overloadError) Overloaded() bool { return true }

// TestOverloadAndLimit checks the statuses of a host over its token limit
// (429, Retry-After when its oldest token expires) and of overload, from the
// command slots or the API client's rate limiter (503, never 500), with
// empty bodies. TestBackendErrors (package main) does the same with the
// real backends' errors.
func TestOverloadAndLimit(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		want       int
		retryAfter string
		reason     string
	}{
		{name: "limit", err: fmt.Errorf("kubeadm: %w", limitError{time.Now().Add(90*time.Second + 500*time.Millisecond)}),
			want: 429, retryAfter: "91", reason: "token_limit"},
		{name: "limit already past", err: limitError{time.Now().Add(-time.Second)},
			want: 429, retryAfter: "1", reason: "token_limit"},
		{name: "overloaded", err: fmt.Errorf("kubeadm: %w: waited", overloadError{}), want: 503, retryAfter: RetryAfter, reason: "busy"},
		{name: "other failure", err: errFake, want: 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := testServer(errTokens{tc.err}, &fakeNodes{}, &fakeCreds{}, now)
			var before float64
			if tc.reason != "" {
				before = testutil.ToFloat64(metrics.Refusals.WithLabelValues(endpointTokenV2, tc.reason))
			}
			resp := do(t, s, "POST", "/v2/allocate_k8s_token", body(machine, now, ""))
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want || resp.Header.Get("Retry-After") != tc.retryAfter || len(got) != 0 {
				t.Errorf("got %d Retry-After %q body %q, want %d, %q, empty",
					resp.StatusCode, resp.Header.Get("Retry-After"), got, tc.want, tc.retryAfter)
			}
			if tc.reason != "" {
				if d := testutil.ToFloat64(metrics.Refusals.WithLabelValues(endpointTokenV2, tc.reason)) - before; d != 1 {
					t.Errorf("refusals{%s} went up by %v, want 1", tc.reason, d)
				}
				if !strings.Contains(logs.String(), machine) {
					t.Errorf("log does not name the host:\n%s", logs)
				}
			}
		})
	}
}

// fakeRevoker records the hosts whose tokens it was asked to revoke.
type fakeRevoker struct {
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

func TestDrainTurnsReadyOff(t *testing.T) {
	s, _ := testServer(&fakeTokens{}, &fakeNodes{}, &fakeCreds{}, now)
	s.Drain()
	if got := do(t, s, "GET", "/ready", "").StatusCode; got != 503 {
		t.Errorf("GET /ready while draining = %d, want 503", got)
	}
	for _, path := range []string{"/", "/metrics"} {
		if got := do(t, s, "GET", path, "").StatusCode; got != 200 {
			t.Errorf("GET %s while draining = %d, want 200", path, got)
		}
	}
	if got := do(t, s, "POST", "/v2/allocate_k8s_token", body(machine, now, "")).StatusCode; got != 200 {
		t.Errorf("token while draining = %d, want 200: the server still serves", got)
	}
}

func TestReady(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ready func() error
		want  int
	}{
		{"no-check", nil, 200},
		{"ready", func() error { return nil }, 200},
		{"not-ready", func() error { return fmt.Errorf("kubeadm missing") }, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := testServer(&fakeTokens{}, &fakeNodes{}, &fakeCreds{}, now)
			s.Ready = tc.ready
			if got := do(t, s, "GET", "/ready", "").StatusCode; got != tc.want {
				t.Errorf("GET /ready = %d, want %d", got, tc.want)
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

func (e identityError) Error() string         { return string(e) }
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
