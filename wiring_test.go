package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/node"
	"github.com/m-lab/epoxy-extensions/token"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
	"github.com/m-lab/epoxy-extensions/token/kubeapi"
	"github.com/m-lab/epoxy-extensions/token/kubectl"
)

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
