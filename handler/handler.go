// Package handler serves the ePoxy extension endpoints. Every extension
// request takes one path (endpoint.go): one Validator checks it before any
// backend sees it, one deadline bounds its backend work, every backend call
// is timed, and one pure function (statusOf, errors.go) maps refusals and
// backend failures to status codes with empty bodies. Each endpoint
// (endpoints.go) is its own work alone.
package handler

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

// Backend is what every backend tells the handler about itself: its name
// in logs and in the backend metrics ("kubectl", "kube_api", "datastore"),
// one of the label values metrics/ initialises. NewMux reads it once.
type Backend interface {
	Name() string
}

// TokenIssuer creates a join token for a host; host may be empty. A host
// at its token limit is a RetryTimer error (429); overload wraps
// overload.Err (503).
type TokenIssuer interface {
	Backend
	Create(ctx context.Context, host string) (joincmd.Join, error)
}

// NodeDeleter removes a node from the cluster; a missing node is no error.
// When owner is valid, the Node must list it among its addresses: a direct
// caller may delete only its own Node. A backend refuses a Node it must not
// delete with a Refuser error ("control_plane_node", "not_own_node").
type NodeDeleter interface {
	Backend
	Delete(ctx context.Context, name string, owner netip.Addr) error
}

// TokenRevoker deletes a host's outstanding join tokens created before
// notAfter (every one when it is zero) and says how many it deleted.
type TokenRevoker interface {
	Backend
	Revoke(ctx context.Context, host string, notAfter time.Time) (int, error)
}

// CredentialStore stores a BMC password. It refuses a BMC it cannot store
// for before any call with an error wrapping hostname.ErrNotMachine (400);
// a failed look-up of the BMC's address wraps hostname.ErrResolve and is
// counted as backend "dns".
type CredentialStore interface {
	Backend
	Put(ctx context.Context, bmc hostname.BMC, password string) error
}

// IdentityVerifier checks the proof of identity a direct caller sends with a
// token request, its Authorization header: nil when it proves a machine
// entitled to a token for host. It refuses with a Refuser error:
// "identity_missing", "identity_invalid", or "identity_unavailable" when the
// proof cannot be checked now.
type IdentityVerifier interface {
	Verify(ctx context.Context, authorization, host string) error
}

// Server holds the backends and settings of the extension endpoints.
type Server struct {
	Tokens    TokenIssuer
	Nodes     NodeDeleter
	Creds     CredentialStore
	Validator Validator
	// BackendTimeout bounds each request's backend work: a kubectl run or
	// Kubernetes API call, or a DNS lookup plus Datastore write.
	BackendTimeout time.Duration
	// Revoker, when set, deletes a leaving host's join tokens after its
	// node was deleted.
	Revoker TokenRevoker
	// Identity, when set, checks direct callers' token requests (see
	// Request.Direct); trusted proxies are never asked.
	Identity IdentityVerifier
	// Ready reports whether the backends can serve; nil means always.
	Ready func() error
	Log   *slog.Logger

	draining atomic.Bool
}

// Health is the body of GET /.
const Health = "ePoxy Extensions"

// NewMux routes every endpoint, each extension endpoint timed by its
// histogram, and serves metrics from gatherer at /metrics. It reads the
// backends' names once.
func NewMux(s *Server, gatherer prometheus.Gatherer) *http.ServeMux {
	metrics.BackendTimeout.Set(s.BackendTimeout.Seconds())
	e := s.endpoints()
	mux := http.NewServeMux()
	timed := func(h *prometheus.HistogramVec, ep endpoint) http.Handler {
		return promhttp.InstrumentHandlerDuration(h, s.extension(ep))
	}
	// No method in the extension patterns: the validator answers 405 itself,
	// with the empty body callers expect (ServeMux's own 405 has a body).
	mux.Handle("/v1/allocate_k8s_token", timed(metrics.TokenRequestDuration, e.tokenV1))
	mux.Handle("/v2/allocate_k8s_token", timed(metrics.TokenRequestDuration, e.tokenV2))
	mux.Handle("/v1/bmc_store_password", timed(metrics.BMCRequestDuration, e.bmc))
	mux.Handle("/v1/node/delete", timed(metrics.NodeRequestDuration, e.node))
	mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /ready", s.ready)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte(Health))
	})
	return mux
}

// IsHealthCheck reports whether r is for the liveness, readiness or metrics
// endpoint, which must answer even when every connection is busy.
func IsHealthCheck(r *http.Request) bool {
	switch r.URL.Path {
	case "/", "/ready", "/metrics":
		return r.Method == http.MethodGet
	}
	return false
}
