package kube

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/overload"
)

// Backoff between attempts of one call: it starts at firstBackoff and
// doubles up to maxBackoff, with up to 20% jitter so that the calls of a
// boot storm do not retry in step.
var (
	firstBackoff = 100 * time.Millisecond
	maxBackoff   = 2 * time.Second
)

// ErrOverloaded means a call could not be made in time because the API
// server, or the client's own rate limiter in front of it, is saturated:
// the caller may try again later. It wraps overload.Err, which the handler
// answers with 503.
var ErrOverloaded = overload.New("the Kubernetes API is overloaded")

// throttled reports whether err is client-go's rate limiter refusing to
// wait past the call's deadline (or giving up when it ended): client-go
// says so only in its message.
func throttled(err error) bool {
	return err != nil && strings.Contains(err.Error(), "client rate limiter Wait returned an error")
}

// Call runs call, the API call named op (a metric label such as
// "create_secret"), and retries it while it fails in a way that may pass
// (the API server unreachable, overloaded or timing out) and ctx has time
// left. Every attempt is timed and every failure counted by reason. It
// returns nil or the last attempt's error, which client-go's apierrors
// functions (IsNotFound, IsAlreadyExists, …) still recognise.
func Call(ctx context.Context, op string, call func(context.Context) error) error {
	backoff := firstBackoff
	var last error // the previous attempt's
	for attempt := 1; ; attempt++ {
		start := time.Now()
		g := &grant{}
		err := call(context.WithValue(ctx, grantKey{}, g))
		// A deadline while ctx still has time is client-go's own timeout of
		// one request (Options.RequestTimeout): the API server did not
		// answer in time, which may pass like any other timeout.
		requestTimeout := err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded)
		result := Reason(err)
		if requestTimeout {
			result = "timeout"
		}
		metrics.KubeAPIDuration.WithLabelValues(op, result).Observe(time.Since(start).Seconds())
		if err == nil {
			return nil
		}
		metrics.KubeAPIErrors.WithLabelValues(op, result).Inc()
		if throttled(err) {
			if attempt > 1 && g.outOfTime() {
				// Our rate limiter refused a retry for want of time left,
				// not of rate: what failed is the API server, as the
				// attempt before said.
				return giveUp(attempt-1, last)
			}
			return fmt.Errorf("%w: %w", ErrOverloaded, err)
		}
		if ctx.Err() != nil && g.starved() {
			// Our own rate limiter kept the request until too little of
			// the deadline was left: too many requests for the rate.
			return fmt.Errorf("%w: held by the client's rate limiter until the deadline: %w", ErrOverloaded, err)
		}
		if !Transient(err) && !requestTimeout {
			return err
		}
		last = err
		wait := backoff + rand.N(backoff/5+1)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return giveUp(attempt, err)
		}
		select {
		case <-ctx.Done():
			return giveUp(attempt, err)
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// giveUp is the error of a call that failed in a way that may pass and ran
// out of time: the API server overloaded (429) means the caller may retry.
func giveUp(attempts int, err error) error {
	if apierrors.IsTooManyRequests(err) {
		return fmt.Errorf("giving up after %d attempts: %w: %w", attempts, ErrOverloaded, err)
	}
	return fmt.Errorf("giving up after %d attempts: %w", attempts, err)
}

// Transient reports whether err may pass if the call is tried again: the
// API server could not be reached, dropped the connection, was overloaded
// or timed out. A caller's own deadline or cancellation is not transient.
func Transient(err error) bool {
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	case apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), apierrors.IsTooManyRequests(err),
		apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err):
		return true
	case utilnet.IsConnectionRefused(err), utilnet.IsConnectionReset(err), utilnet.IsProbableEOF(err),
		utilnet.IsHTTP2ConnectionLost(err), utilnet.IsTimeout(err):
		return true
	}
	return false
}

// Reason names the outcome of an API call for metrics: "ok", an API status
// such as "not_found" or "forbidden", or how the connection failed. The set
// is small and fixed.
func Reason(err error) string {
	switch {
	case err == nil:
		return "ok"
	case throttled(err):
		return "throttled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case apierrors.IsNotFound(err):
		return "not_found"
	case apierrors.IsAlreadyExists(err):
		return "already_exists"
	case apierrors.IsConflict(err):
		return "conflict"
	case apierrors.IsUnauthorized(err):
		return "unauthorized"
	case apierrors.IsForbidden(err):
		return "forbidden"
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		return "invalid"
	case apierrors.IsTooManyRequests(err):
		return "too_many_requests"
	case apierrors.IsServerTimeout(err), apierrors.IsTimeout(err), utilnet.IsTimeout(err):
		return "timeout"
	case apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err), apierrors.IsUnexpectedServerError(err):
		return "server_error"
	case utilnet.IsConnectionRefused(err), utilnet.IsConnectionReset(err), utilnet.IsProbableEOF(err),
		utilnet.IsHTTP2ConnectionLost(err):
		return "unreachable"
	}
	return "other"
}
