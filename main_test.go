// The tests of the server as main.go assembles it: its HTTP server's
// timeouts, and the handler over the real backend packages (their errors'
// statuses and metric names, the instance identity check).
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/m-lab/epoxy/extension"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/handler"
	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/identity"
	"github.com/m-lab/epoxy-extensions/identity/identitytest"
	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/node"
	"github.com/m-lab/epoxy-extensions/token"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
	"github.com/m-lab/epoxy-extensions/token/kubeapi"
	"github.com/m-lab/epoxy-extensions/token/kubectl"
)

// TestStalledClientsCannotHoldTheServer opens many connections that send half
// a request and stop (slowloris). The server must keep answering others and
// drop the stalled ones once the header timeout passes.
func TestStalledClientsCannotHoldTheServer(t *testing.T) {
	old := headerTimeout
	headerTimeout = 500 * time.Millisecond
	t.Cleanup(func() { headerTimeout = old })

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	srv := newHTTPServer(h, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	const stalled = 200
	conns := make([]net.Conn, 0, stalled)
	for range stalled {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, "POST /v2/allocate_k8s_token HTTP/1.1\r\nHost: x\r\n") // and never finish
		conns = append(conns, c)
	}

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatalf("GET / with %d stalled clients: %v", stalled, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET / with %d stalled clients = %d, want 200", stalled, resp.StatusCode)
	}

	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		// The server answers a timed-out header read with nothing or a
		// 408 and then closes: either way the read ends without our help.
		_, err := io.Copy(io.Discard, bufio.NewReader(c))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("stalled connection %d still open after 10 s, want it closed after the %s header timeout", i, headerTimeout)
		}
	}
}

// The handler knows the backends only through small interfaces and their
// errors only by their methods, so that it and its fuzz targets depend on
// no backend. These tests put the real backends and their real errors
// behind it, as main does.

// forbiddenAPI is an API server that refuses every Secret create and read.
type forbiddenAPI struct{}

var (
	_ node.Remover = forbiddenNodes{}
	_ node.Remover = controlPlaneNodes{}
)

func (forbiddenAPI) Create(context.Context, *corev1.Secret, metav1.CreateOptions) (*corev1.Secret, error) {
	return nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", errors.New("RBAC"))
}

func (forbiddenAPI) Get(context.Context, string, metav1.GetOptions) (*corev1.Secret, error) {
	return nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", errors.New("RBAC"))
}

func (forbiddenAPI) Delete(context.Context, string, metav1.DeleteOptions) error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "", errors.New("RBAC"))
}

// forbiddenNodes is an API server that lets every Node be read and refuses
// every Node delete; controlPlaneNodes serves every name as a control-plane
// Node and fails the test if asked to delete one.
type (
	forbiddenNodes    struct{}
	controlPlaneNodes struct{ t *testing.T }
)

func (forbiddenNodes) Get(_ context.Context, name string, _ metav1.GetOptions) (*corev1.Node, error) {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: "u"}}, nil
}

func (forbiddenNodes) Delete(context.Context, string, metav1.DeleteOptions) error {
	return apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errors.New("RBAC"))
}

func (controlPlaneNodes) Get(_ context.Context, name string, _ metav1.GetOptions) (*corev1.Node, error) {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, UID: "u", Labels: map[string]string{node.ControlPlaneLabel: ""}}}, nil
}

func (c controlPlaneNodes) Delete(context.Context, string, metav1.DeleteOptions) error {
	c.t.Error("a control-plane Node was deleted")
	return nil
}

// controlPlaneKubectl is kubectl on a cluster where every name is a
// control-plane Node: the delete by selector finds nothing, the look-up
// finds it.
type controlPlaneKubectl struct{}

func (controlPlaneKubectl) Run(_ context.Context, _ string, args ...string) ([]byte, error) {
	if slices.Contains(args, "get") {
		return []byte("node/x\n"), nil
	}
	return nil, nil
}

// failingRunner is a kubeadm or kubectl that always fails.
type failingRunner struct{}

func (failingRunner) Run(context.Context, string, ...string) ([]byte, error) {
	return nil, errors.New("exit status 1")
}

// errTokens fails every Create with err.
type errTokens struct{ err error }

func (errTokens) Name() string { return "kubectl" }

func (e errTokens) Create(context.Context, string) (joincmd.Join, error) {
	return joincmd.Join{}, e.err
}

// okNodes deletes every node; okCreds stores every password.
type okNodes struct{}

func (okNodes) Name() string { return "kubectl" }

func (okNodes) Delete(context.Context, string, netip.Addr) error { return nil }

type okCreds struct{}

func (okCreds) Name() string { return "datastore" }

func (okCreds) Put(context.Context, hostname.BMC, string) error { return nil }

// serve runs the handler over tokens and nodes and sends it one extension
// request for a machine that booted a minute ago. It returns the response
// and the log.
func serve(t *testing.T, tokens handler.TokenIssuer, nodes handler.NodeDeleter, path string) (*http.Response, string) {
	t.Helper()
	var logs bytes.Buffer
	s := &handler.Server{
		Tokens:         tokens,
		Nodes:          nodes,
		Creds:          okCreds{},
		Validator:      handler.Validator{MaxBootAge: 2 * time.Hour, MaxClockSkew: 5 * time.Minute, Now: time.Now},
		BackendTimeout: 5 * time.Second,
		Log:            slog.New(slog.NewJSONHandler(&logs, nil)),
	}
	srv := httptest.NewServer(handler.NewMux(s, prometheus.NewRegistry()))
	t.Cleanup(srv.Close)
	body, err := json.Marshal(extension.Request{V1: &extension.V1{
		Hostname: "mlab1-lga01.mlab-sandbox.measurement-lab.org",
		LastBoot: time.Now().Add(-time.Minute),
	}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(srv.URL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); len(b) != 0 && resp.StatusCode != http.StatusOK {
		t.Errorf("POST %s = %d with body %q, want an empty body", path, resp.StatusCode, b)
	}
	return resp, logs.String()
}

// TestBackendErrors checks what each real backend's failure answers and
// under which name it is counted and logged, and that the token limit and
// overload errors of the real packages reach the caller as 429 and 503.
func TestBackendErrors(t *testing.T) {
	const tokenPath, nodePath = "/v2/allocate_k8s_token", "/v1/node/delete"
	slots := func(s token.Store) *token.Slots { return &token.Slots{Store: s, Max: 3, TTL: time.Minute} }
	throttled := errors.New(`client rate limiter Wait returned an error: rate: Wait(n=1) would exceed context deadline`)
	tests := []struct {
		name       string
		tokens     handler.TokenIssuer
		nodes      handler.NodeDeleter
		path       string
		want       int
		backend    string // counted in backend_failures and logged, for a 500
		retryAfter string // for a 429 or 503
	}{
		{name: "kubeapi.Store refused", tokens: slots(&kubeapi.Store{Secrets: forbiddenAPI{}}), path: tokenPath, want: 500, backend: "kube_api"},
		{name: "kubectl.Store failing", tokens: slots(&kubectl.Store{Runner: failingRunner{}}), path: tokenPath, want: 500, backend: "kubectl"},
		{name: "node.API refused", nodes: &node.API{Nodes: forbiddenNodes{}}, path: nodePath, want: 500, backend: "kube_api"},
		{name: "node.API control plane", nodes: &node.API{Nodes: controlPlaneNodes{t}}, path: nodePath, want: 403},
		{name: "node.Kubectl control plane", nodes: &node.Kubectl{Runner: controlPlaneKubectl{}}, path: nodePath, want: 403},
		{name: "node.Kubectl failing", nodes: &node.Kubectl{Runner: failingRunner{}}, path: nodePath, want: 500, backend: "kubectl"},
		{name: "token.LimitError", tokens: errTokens{fmt.Errorf("kubeadm: %w", &token.LimitError{Max: 3, RetryAt: time.Now().Add(90*time.Second + 500*time.Millisecond)})},
			path: tokenPath, want: 429, retryAfter: "91"},
		{name: "command.ErrBusy", tokens: errTokens{fmt.Errorf("kubeadm: %w: waited", command.ErrBusy)}, path: tokenPath, want: 503, retryAfter: handler.RetryAfter},
		{name: "command.KilledError at a deadline", tokens: errTokens{fmt.Errorf("kubectl create: %w", &command.KilledError{Path: "kubectl", Err: context.DeadlineExceeded})},
			path: tokenPath, want: 503, retryAfter: handler.RetryAfter},
		{name: "kube.ErrOverloaded", tokens: errTokens{fmt.Errorf("creating Secret: %w: %w", kube.ErrOverloaded, throttled)}, path: tokenPath, want: 503, retryAfter: handler.RetryAfter},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tokens, nodes := tc.tokens, tc.nodes
			if tokens == nil {
				tokens = errTokens{errors.New("unused")}
			}
			if nodes == nil {
				nodes = okNodes{}
			}
			var before float64
			if tc.backend != "" {
				before = testutil.ToFloat64(metrics.BackendFailures.WithLabelValues(tc.backend))
			}
			resp, logs := serve(t, tokens, nodes, tc.path)
			if resp.StatusCode != tc.want || resp.Header.Get("Retry-After") != tc.retryAfter {
				t.Errorf("POST %s = %d, Retry-After %q; want %d, %q", tc.path, resp.StatusCode, resp.Header.Get("Retry-After"), tc.want, tc.retryAfter)
			}
			if tc.backend == "" {
				return
			}
			if got := testutil.ToFloat64(metrics.BackendFailures.WithLabelValues(tc.backend)) - before; got != 1 {
				t.Errorf("backend_failures{%s} went up by %v, want 1", tc.backend, got)
			}
			if want := `"backend":"` + tc.backend + `"`; !strings.Contains(logs, want) {
				t.Errorf("log has no %s:\n%s", want, logs)
			}
		})
	}
}

// countingTokens issues a fixed token and counts its calls.
type countingTokens struct{ calls int }

func (*countingTokens) Name() string { return "kubectl" }

func (c *countingTokens) Create(context.Context, string) (joincmd.Join, error) {
	c.calls++
	return joincmd.Join{APIAddress: "192.0.2.1:6443", Token: "abcdef.0123456789abcdef", CAHash: "sha256:" + strings.Repeat("0", 64)}, nil
}

// TestInstanceIdentity puts the real identity check (google.golang.org/api
// idtoken, with only the key URL's transport swapped for a local key
// endpoint) behind the handler, as main does, and asks for tokens as a
// direct caller (loopback is no trusted proxy here): a valid token for its
// own name is served; anything else is 401, or 503 with the key endpoint
// down, never reaches the token backend, and never logs the token.
func TestInstanceIdentity(t *testing.T) {
	const aud, project, inst = "http://epoxy-extension-server:8800", "mlab-sandbox", "mlab1-chs0t"
	const host = inst + ".mlab-sandbox.measurement-lab.org"
	ks := identitytest.NewKeyServer(t)
	v, err := identity.NewVerifier(context.Background(), aud, []string{project}, ks.Client())
	if err != nil {
		t.Fatal(err)
	}
	soon := time.Now().Add(time.Hour)
	valid := ks.Token(t, aud, project, inst, soon)
	tests := []struct {
		name, authorization, host string
		keysDown                  bool
		want                      int
	}{
		{"valid, its own name", "Bearer " + valid, host, false, 200},
		{"valid, another name", "Bearer " + valid, "mlab2-chs0t.mlab-sandbox.measurement-lab.org", false, 401},
		{"wrong audience", "Bearer " + ks.Token(t, "http://elsewhere", project, inst, soon), host, false, 401},
		{"wrong project", "Bearer " + ks.Token(t, aud, "not-mlab", inst, soon), host, false, 401},
		{"expired", "Bearer " + ks.Token(t, aud, project, inst, time.Now().Add(-time.Second)), host, false, 401},
		{"none", "", host, false, 401},
		{"keys down", "Bearer " + ks.Token(t, aud, project, inst, soon), host, true, 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.keysDown {
				// A verifier of its own, with nothing cached yet.
				v, err = identity.NewVerifier(context.Background(), aud, []string{project}, ks.Client())
				if err != nil {
					t.Fatal(err)
				}
				ks.Down.Store(true)
				defer ks.Down.Store(false)
			}
			var logs bytes.Buffer
			tokens := &countingTokens{}
			proxies, _ := handler.ParseSources("10.0.0.5")
			s := &handler.Server{
				Tokens: tokens, Nodes: okNodes{}, Creds: okCreds{}, Identity: v,
				Validator:      handler.Validator{MaxBootAge: 2 * time.Hour, MaxClockSkew: 5 * time.Minute, TrustedProxies: proxies},
				BackendTimeout: 5 * time.Second,
				Log:            slog.New(slog.NewJSONHandler(&logs, nil)),
			}
			srv := httptest.NewServer(handler.NewMux(s, prometheus.NewRegistry()))
			defer srv.Close()
			body, _ := json.Marshal(extension.Request{V1: &extension.V1{Hostname: tc.host, LastBoot: time.Now().Add(-time.Minute)}})
			req, _ := http.NewRequest("POST", srv.URL+"/v2/allocate_k8s_token", bytes.NewReader(body))
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want || (tc.want != 200 && len(b) != 0) {
				t.Errorf("status %d, body %q; want %d", resp.StatusCode, b, tc.want)
			}
			if reached := tokens.calls > 0; reached != (tc.want == 200) {
				t.Errorf("token backend reached: %v, want %v", reached, tc.want == 200)
			}
			if tok := strings.TrimPrefix(tc.authorization, "Bearer "); tok != "" && strings.Contains(logs.String(), tok[strings.LastIndex(tok, ".")+1:]) {
				t.Errorf("the log holds the identity token:\n%s", logs.String())
			}
		})
	}
}
