package handler

import (
	"errors"
	"net/http"
	"time"

	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/overload"
)

// Refusal is a reason to turn a request away: the request's fault, or the
// server's overload, not a backend failure. Its Reason labels the refusals
// metric.
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

	// The refusals a backend or the identity check may name (Refuser).
	ErrControlPlaneNode = &Refusal{http.StatusForbidden, "control_plane_node"}
	ErrNotOwnNode       = &Refusal{http.StatusForbidden, "not_own_node"}
	ErrIdentityMissing  = &Refusal{http.StatusUnauthorized, "identity_missing"}
	ErrIdentityInvalid  = &Refusal{http.StatusUnauthorized, "identity_invalid"}
	// ErrIdentityUnavailable is an identity that could not be checked now
	// (the signing keys could not be fetched): the caller may retry.
	ErrIdentityUnavailable = &Refusal{http.StatusServiceUnavailable, "identity_unavailable"}
	// ErrTokenLimit is a host that holds its most live join tokens
	// (RetryTimer): the caller may retry when the oldest expires.
	ErrTokenLimit = &Refusal{http.StatusTooManyRequests, "token_limit"}
	// ErrBusy is a request the server or the API server could not take on
	// in time (overload.Err): the caller may retry after RetryAfter.
	ErrBusy = &Refusal{http.StatusServiceUnavailable, "busy"}
	// ErrClientGone is a request whose caller went away before the answer:
	// neither a backend failure nor overload. Nobody reads its status;
	// metrics record it as 499, nginx's "client closed request".
	ErrClientGone = &Refusal{StatusClientClosedRequest, "client_gone"}
)

// StatusClientClosedRequest is the status recorded for a request whose
// caller went away (nginx's 499).
const StatusClientClosedRequest = 499

// RetryAfter is the Retry-After header sent with ErrBusy, in seconds:
// overload.RetryAfter, the one policy.
const RetryAfter = overload.RetryAfter

// Refuser is an error by which a backend or the identity check refuses a
// request rather than fails it: RefusalReason names one of the refusals
// above (ErrControlPlaneNode, ErrNotOwnNode, ErrIdentity…) by its Reason,
// so that neither side imports the other. node.ErrControlPlane,
// node.ErrNotOwnNode and *identity.Error are Refusers. An unknown reason is
// a backend failure.
type Refuser interface {
	error
	RefusalReason() string
}

// RetryTimer is an error by which a backend says the caller may ask again
// at RetryTime and not before: a host at its token limit (ErrTokenLimit,
// 429), whose oldest token expires then. *token.LimitError is one.
type RetryTimer interface {
	error
	RetryTime() time.Time
}

// namedRefusals are the refusals a Refuser may name, by reason.
var namedRefusals = map[string]*Refusal{}

func init() {
	for _, r := range []*Refusal{ErrControlPlaneNode, ErrNotOwnNode, ErrIdentityMissing, ErrIdentityInvalid, ErrIdentityUnavailable} {
		namedRefusals[r.Reason] = r
	}
}

// backendError is a failure of the named backend (its Name); the caller
// sees a 500.
type backendError struct {
	backend string
	err     error
}

func (e *backendError) Error() string { return e.backend + ": " + e.err.Error() }
func (e *backendError) Unwrap() error { return e.err }

// backendDNS is the backend name of a CredentialStore's failed look-up of
// a BMC address (hostname.ErrResolve).
const backendDNS = "dns"

// status is what an error comes to: the answer's code and headers, and for
// the log and metrics the refusal it is (nil for a failure) or the backend
// that failed ("" for neither).
type status struct {
	code    int
	header  map[string]string
	refusal *Refusal
	backend string
}

// statusOf maps err, the error of an extension request, to its status: the
// one place that knows which error means which status. now dates a
// RetryTimer's Retry-After. In order:
//
//   - ErrClientGone (the caller went away): 499, whatever else err says;
//   - a Refuser's known refusal, or one of this package's refusals;
//   - a RetryTimer: 429 ErrTokenLimit, Retry-After until its RetryTime;
//   - overload (overload.Err): 503 ErrBusy, Retry-After RetryAfter;
//   - hostname.ErrNotMachine: 400 ErrNotMachine;
//   - a backend's failure: 500, counted under its name ("dns" for
//     hostname.ErrResolve);
//   - anything else: 500.
func statusOf(err error, now time.Time) status {
	var (
		refuser Refuser
		refusal *Refusal
		limit   RetryTimer
		backend *backendError
	)
	switch {
	case errors.Is(err, ErrClientGone):
		return refused(ErrClientGone, "")
	case errors.As(err, &refuser) && namedRefusals[refuser.RefusalReason()] != nil:
		return refused(namedRefusals[refuser.RefusalReason()], "")
	case errors.As(err, &refusal):
		return refused(refusal, "")
	case errors.As(err, &limit):
		return refused(ErrTokenLimit, overload.Until(limit.RetryTime(), now))
	case isOverload(err):
		return refused(ErrBusy, RetryAfter)
	case errors.Is(err, hostname.ErrNotMachine):
		return refused(ErrNotMachine, "")
	case errors.As(err, &backend):
		name := backend.backend
		if errors.Is(err, hostname.ErrResolve) {
			name = backendDNS
		}
		return status{code: http.StatusInternalServerError, backend: name}
	}
	return status{code: http.StatusInternalServerError}
}

// refused is the status of refusal r, with Retry-After retry for a 503 or
// 429, and the headers its code calls for.
func refused(r *Refusal, retry string) status {
	st := status{code: r.Code, refusal: r}
	switch r.Code {
	case http.StatusMethodNotAllowed:
		st.header = map[string]string{"Allow": http.MethodPost}
	case http.StatusServiceUnavailable, http.StatusTooManyRequests:
		if retry == "" {
			retry = RetryAfter
		}
		st.header = map[string]string{"Retry-After": retry}
	case http.StatusUnauthorized:
		st.header = map[string]string{"WWW-Authenticate": `Bearer realm="epoxy-extensions"`}
	}
	return st
}

// isOverload reports whether err says that the server or a backend could
// not take the work on in time: errors.Is(err, overload.Err).
func isOverload(err error) bool {
	return errors.Is(err, overload.Err)
}
