package handler

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/redact"
)

// Refusal is a reason to turn a request away before it reaches a backend.
// Its Reason labels the refusals metric.
type Refusal struct {
	Code   int
	Reason string
}

func (r *Refusal) Error() string { return r.Reason }

// The refusals. Errors from Validator.Parse and Password wrap one of them.
var (
	ErrMethod       = &Refusal{http.StatusMethodNotAllowed, "method"}
	ErrBodyTooLarge = &Refusal{http.StatusBadRequest, "body_too_large"}
	ErrDecode       = &Refusal{http.StatusBadRequest, "decode"}
	ErrNoV1         = &Refusal{http.StatusBadRequest, "no_v1"}
	ErrHostname     = &Refusal{http.StatusBadRequest, "hostname"}
	ErrNotMachine   = &Refusal{http.StatusBadRequest, "not_machine"}
	ErrPassword     = &Refusal{http.StatusBadRequest, "password"}
	ErrBootInFuture = &Refusal{http.StatusBadRequest, "boot_in_future"}
	ErrBootTooOld   = &Refusal{http.StatusRequestTimeout, "boot_too_old"}
	ErrSource       = &Refusal{http.StatusForbidden, "source"}
	// ErrNotTrusted is a direct caller (not a trusted proxy) asking for
	// what only a proxy may ask: a BMC password store.
	ErrNotTrusted = &Refusal{http.StatusForbidden, "not_trusted"}

	// The refusals a backend or the identity check may name (RefusalReason).
	ErrControlPlaneNode = &Refusal{http.StatusForbidden, "control_plane_node"}
	ErrNotOwnNode       = &Refusal{http.StatusForbidden, "not_own_node"}
	ErrIdentityMissing  = &Refusal{http.StatusUnauthorized, "identity_missing"}
	ErrIdentityInvalid  = &Refusal{http.StatusUnauthorized, "identity_invalid"}
	// ErrIdentityUnavailable is an identity that could not be checked now
	// (the signing keys could not be fetched): the caller may retry.
	ErrIdentityUnavailable = &Refusal{http.StatusServiceUnavailable, "identity_unavailable"}
	// ErrTokenLimit is a host that holds its most live join tokens: the
	// caller may retry when the oldest expires.
	ErrTokenLimit = &Refusal{http.StatusTooManyRequests, "token_limit"}
	// ErrBusy is a request the server or the API server could not take on
	// in time (no command slot, or client-side rate limit, before the
	// deadline; the API server overloaded): the caller may retry after
	// RetryAfter.
	ErrBusy = &Refusal{http.StatusServiceUnavailable, "busy"}
	// ErrClientGone is a request whose caller went away before the answer:
	// neither a backend failure nor overload. Nobody reads its status;
	// metrics record it as 499, nginx's "client closed request".
	ErrClientGone = &Refusal{StatusClientClosedRequest, "client_gone"}
)

// StatusClientClosedRequest is the status recorded for a request whose
// caller went away (nginx's 499).
const StatusClientClosedRequest = 499

// RetryAfter is the Retry-After header sent with ErrBusy, in seconds.
const RetryAfter = "30"

// retryAfter returns the Retry-After seconds of a 429 for a host whose
// oldest live token expires at t: at least 1.
func retryAfter(t, now time.Time) string {
	secs := int64(math.Ceil(t.Sub(now).Seconds()))
	return strconv.FormatInt(max(secs, 1), 10)
}

// isOverload reports whether err says that a backend could not take the
// work on in time (no command slot; the Kubernetes API or its client-side
// rate limit saturated): backends mark such errors with an Overloaded
// method, so that this is the one place that knows overload means 503.
func isOverload(err error) bool {
	var o interface{ Overloaded() bool }
	return errors.As(err, &o) && o.Overloaded()
}

// namedRefusals are the refusals that a backend or the identity check
// names by a RefusalReason method on its error, so that the handler imports
// neither: a control-plane Node, a direct caller's delete of a Node that is
// not its own, an identity missing, invalid or not checkable now.
var namedRefusals = map[string]*Refusal{}

func init() {
	for _, r := range []*Refusal{ErrControlPlaneNode, ErrNotOwnNode, ErrIdentityMissing, ErrIdentityInvalid, ErrIdentityUnavailable} {
		namedRefusals[r.Reason] = r
	}
}

// namedRefusal returns the refusal err names with its RefusalReason method.
func namedRefusal(err error) (*Refusal, bool) {
	var n interface{ RefusalReason() string }
	if !errors.As(err, &n) {
		return nil, false
	}
	r, ok := namedRefusals[n.RefusalReason()]
	return r, ok
}

// backendError is a failure of the named backend ("kubeadm", "kubectl",
// "datastore"); the caller sees a 500.
type backendError struct {
	backend string
	err     error
}

func (e *backendError) Error() string { return e.backend + ": " + e.err.Error() }
func (e *backendError) Unwrap() error { return e.err }

// outcome is what one request came to, for the log and the metrics.
type outcome struct {
	endpoint string
	host     string
	start    time.Time
	// backend is the time spent in backend calls, so that the log tells
	// the server's own share of a request from its backend's.
	backend time.Duration
}

// backendDone records a backend call that began at start: in the backend
// duration metric, and in the request's backend time.
func (o *outcome) backendDone(backend string, start time.Time) {
	d := time.Since(start)
	metrics.BackendDuration.WithLabelValues(backend).Observe(d.Seconds())
	o.backend += d
}

// fail answers r with the status err maps to and an empty body (callers that
// do not use curl --fail take any body for join data), then logs why and
// counts it. It is the only place that picks an error status.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, o outcome, err error) {
	code := http.StatusInternalServerError
	attrs := []any{
		slog.String("endpoint", o.endpoint),
		slog.String("host", o.host),
		slog.String("remote", r.RemoteAddr),
		slog.Float64("duration_seconds", time.Since(o.start).Seconds()),
	}
	var refusal *Refusal
	var backend *backendError
	var limit interface{ RetryTime() time.Time } // token.LimitError
	retry := RetryAfter
	switch {
	case r.Context().Err() != nil:
		err = fmt.Errorf("%w: %w", ErrClientGone, err)
	case errors.As(err, &limit):
		err = fmt.Errorf("%w: %w", ErrTokenLimit, err)
		retry = retryAfter(limit.RetryTime(), time.Now())
	case isOverload(err):
		err = fmt.Errorf("%w: %w", ErrBusy, err)
	}
	if r, ok := namedRefusal(err); ok {
		err = fmt.Errorf("%w: %w", r, err)
	}
	switch {
	case errors.As(err, &refusal):
		code = refusal.Code
		metrics.Refusals.WithLabelValues(o.endpoint, refusal.Reason).Inc()
		s.Log.Warn("request refused", append(attrs,
			slog.Int("status", code), slog.String("reason", refusal.Reason), slog.String("detail", err.Error()))...)
	case errors.As(err, &backend):
		metrics.BackendFailures.WithLabelValues(backend.backend).Inc()
		s.Log.Error("backend failed", append(attrs,
			slog.Int("status", code), slog.String("backend", backend.backend),
			slog.String("error", redact.String(backend.err.Error())))...)
	default:
		s.Log.Error("request failed", append(attrs,
			slog.Int("status", code), slog.String("error", redact.String(err.Error())))...)
	}
	switch code {
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", http.MethodPost)
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		w.Header().Set("Retry-After", retry)
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="epoxy-extensions"`)
	}
	w.WriteHeader(code)
}

// served logs a successful request.
func (s *Server) served(r *http.Request, o outcome) {
	s.Log.Info("request served",
		slog.String("endpoint", o.endpoint),
		slog.String("host", o.host),
		slog.String("remote", r.RemoteAddr),
		slog.Int("status", http.StatusOK),
		slog.Float64("duration_seconds", time.Since(o.start).Seconds()),
		slog.Float64("backend_seconds", o.backend.Seconds()))
}
