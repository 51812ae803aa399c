// Package handler serves the ePoxy extension endpoints. Every extension
// request passes one Validator before any backend sees it, and one function
// (Server.fail) maps refusals and backend failures to status codes with empty
// bodies.
package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/redact"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TokenIssuer creates a join token for a host; host may be empty.
type TokenIssuer interface {
	Create(ctx context.Context, host string) (joincmd.Join, error)
}

// NodeDeleter removes a node from the cluster; a missing node is no error.
// When owner is valid, the Node must list it among its addresses: a direct
// caller may delete only its own Node. A backend refuses a Node it must not
// delete with an error whose RefusalReason method names why
// ("control_plane_node", "not_own_node").
type NodeDeleter interface {
	Delete(ctx context.Context, name string, owner netip.Addr) error
}

// TokenRevoker deletes a host's outstanding join tokens created before
// notAfter (every one when it is zero) and says how many it deleted.
type TokenRevoker interface {
	Revoke(ctx context.Context, host string, notAfter time.Time) (int, error)
}

// IdentityVerifier checks the proof of identity a direct caller sends with a
// token request, its Authorization header: nil when it proves a machine
// entitled to a token for host. Its errors name a refusal with a
// RefusalReason method: "identity_missing", "identity_invalid", or
// "identity_unavailable" when the proof cannot be checked now.
type IdentityVerifier interface {
	Verify(ctx context.Context, authorization, host string) error
}

// CredentialStore stores a BMC password.
type CredentialStore interface {
	Put(ctx context.Context, bmc hostname.BMC, password string) error
}

// backendName names backend b in logs and the backend failures metric: the
// answer of its Name method ("kubeadm", "kube_api", …), or fallback.
func backendName(b any, fallback string) string {
	if n, ok := b.(interface{ Name() string }); ok {
		return n.Name()
	}
	return fallback
}

// Server holds the backends and settings of the extension endpoints.
type Server struct {
	Tokens    TokenIssuer
	Nodes     NodeDeleter
	Creds     CredentialStore
	Validator Validator
	// BackendTimeout bounds each backend call: a kubeadm or kubectl run or
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

// Drain makes /ready answer 503 from now on, while every other endpoint
// keeps serving: the first step of a shutdown.
func (s *Server) Drain() { s.draining.Store(true) }

// Endpoint names, as used in logs and the refusals metric.
const (
	endpointTokenV1 = "allocate_k8s_token_v1"
	endpointTokenV2 = "allocate_k8s_token_v2"
	endpointBMC     = "bmc_store_password"
	endpointNode    = "node_delete"
)

// Health is the body of GET /.
const Health = "ePoxy Extensions"

// NewMux routes every endpoint, each extension endpoint timed by its
// histogram, and serves metrics from gatherer at /metrics.
func NewMux(s *Server, gatherer prometheus.Gatherer) *http.ServeMux {
	metrics.BackendTimeout.Set(s.BackendTimeout.Seconds())
	mux := http.NewServeMux()
	timed := func(h *prometheus.HistogramVec, f http.HandlerFunc) http.Handler {
		return promhttp.InstrumentHandlerDuration(h, f)
	}
	// No method in the extension patterns: the validator answers 405 itself,
	// with the empty body callers expect (ServeMux's own 405 has a body).
	mux.Handle("/v1/allocate_k8s_token", timed(metrics.TokenRequestDuration, s.token(endpointTokenV1)))
	mux.Handle("/v2/allocate_k8s_token", timed(metrics.TokenRequestDuration, s.token(endpointTokenV2)))
	mux.Handle("/v1/bmc_store_password", timed(metrics.BMCRequestDuration, s.bmc))
	mux.Handle("/v1/node/delete", timed(metrics.NodeRequestDuration, s.deleteNode))
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

// token serves /v1 and /v2 allocate_k8s_token.
func (s *Server) token(endpoint string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		o := outcome{endpoint: endpoint, start: time.Now()}
		req, err := s.Validator.Parse(w, r, true)
		if err != nil {
			s.fail(w, r, o, err)
			return
		}
		o.host = req.Host
		ctx, cancel := context.WithTimeout(r.Context(), s.BackendTimeout)
		defer cancel()
		if req.Direct && s.Identity != nil {
			if err := s.Identity.Verify(ctx, r.Header.Get("Authorization"), req.Host); err != nil {
				s.fail(w, r, o, err)
				return
			}
		}
		backend := backendName(s.Tokens, "kubeadm")
		start := time.Now()
		join, err := s.Tokens.Create(ctx, req.Host)
		o.backendDone(backend, start)
		if err != nil {
			s.fail(w, r, o, &backendError{backend, err})
			return
		}
		var body []byte
		if endpoint == endpointTokenV1 {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			body = []byte(join.Token)
		} else {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			body, err = json.Marshal(join)
			if err != nil {
				s.fail(w, r, o, err)
				return
			}
		}
		w.Write(body)
		s.served(r, o)
	}
}

// bmc serves /v1/bmc_store_password.
func (s *Server) bmc(w http.ResponseWriter, r *http.Request) {
	o := outcome{endpoint: endpointBMC, start: time.Now()}
	req, err := s.Validator.Parse(w, r, false)
	if err != nil {
		s.fail(w, r, o, err)
		return
	}
	o.host = req.Host
	if req.Direct {
		// Physical machines always come through ePoxy.
		s.fail(w, r, o, fmt.Errorf("%w: BMC passwords come only through a trusted proxy", ErrNotTrusted))
		return
	}
	password, err := Password(req.RawQuery)
	if err != nil {
		s.fail(w, r, o, err)
		return
	}
	bmc, err := hostname.ParseBMC(req.Host)
	if err != nil {
		s.fail(w, r, o, errors.Join(ErrNotMachine, err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.BackendTimeout)
	defer cancel()
	start := time.Now()
	err = s.Creds.Put(ctx, bmc, password)
	if errors.Is(err, hostname.ErrNotMachine) { // refused before any backend call
		s.fail(w, r, o, errors.Join(ErrNotMachine, err))
		return
	}
	o.backendDone("datastore", start)
	if err != nil {
		backend := "datastore"
		if errors.Is(err, hostname.ErrResolve) {
			backend = "dns"
		}
		s.fail(w, r, o, &backendError{backend, err})
		return
	}
	s.served(r, o)
}

// deleteNode serves /v1/node/delete.
func (s *Server) deleteNode(w http.ResponseWriter, r *http.Request) {
	o := outcome{endpoint: endpointNode, start: time.Now()}
	req, err := s.Validator.Parse(w, r, false)
	if err != nil {
		s.fail(w, r, o, err)
		return
	}
	o.host = req.Host
	ctx, cancel := context.WithTimeout(r.Context(), s.BackendTimeout)
	defer cancel()
	backend := backendName(s.Nodes, "kubectl")
	var owner netip.Addr
	if req.Direct {
		owner = req.Caller
	}
	start := time.Now()
	err = s.Nodes.Delete(ctx, req.Host, owner)
	o.backendDone(backend, start)
	if err != nil {
		s.fail(w, r, o, &backendError{backend, err})
		return
	}
	if s.Revoker != nil {
		n, err := s.Revoker.Revoke(ctx, req.Host, time.Time{})
		if n > 0 {
			metrics.TokensRevoked.WithLabelValues("node_delete").Add(float64(n))
			s.Log.Info("join tokens revoked", slog.String("host", req.Host), slog.Int("tokens", n), slog.String("why", "node_delete"))
		}
		if err != nil {
			s.fail(w, r, o, &backendError{backendName(s.Revoker, "kubectl"), err})
			return
		}
	}
	s.served(r, o)
}

// ready serves GET /ready: 200 when the backends can serve, else 503. The
// liveness check callers use stays GET /.
func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if s.Ready != nil {
		if err := s.Ready(); err != nil {
			s.Log.Warn("not ready", slog.String("error", redact.String(err.Error())))
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ready"))
}
