package handler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/redact"
)

// endpoint is one extension endpoint: its name in logs and the refusals
// metric, whether its request may name no host, and its work.
type endpoint struct {
	name         string
	hostOptional bool
	work         func(j *job) (response, error)
}

// response is a served request's answer: its body, of type contentType
// (none when the body is empty).
type response struct {
	contentType string
	body        []byte
}

// job is one checked extension request on its way through an endpoint's
// work.
type job struct {
	Request
	// ctx bounds the backend work: the request's context, with the deadline
	// of Server.BackendTimeout.
	ctx context.Context
	r   *http.Request
	o   *outcome
}

// call runs f, a call of the backend named backend, timing it in the
// backend duration metric and in the request's backend time. Its error is
// that backend's: a 500 counted and logged under its name, unless statusOf
// finds a refusal or overload in it.
func (j *job) call(backend string, f func(ctx context.Context) error) error {
	start := time.Now()
	err := f(j.ctx)
	d := time.Since(start)
	metrics.BackendDuration.WithLabelValues(backend).Observe(d.Seconds())
	j.o.backend += d
	return failed(backend, err)
}

// failed returns err as a failure of backend, or nil.
func failed(backend string, err error) error {
	if err == nil {
		return nil
	}
	return &backendError{backend, err}
}

// outcome is what one request came to, for the log and the metrics.
type outcome struct {
	endpoint string
	host     string
	start    time.Time
	// backend is the time spent in backend calls, so that the log tells
	// the server's own share of a request from its backend's.
	backend time.Duration
}

// extension serves endpoint e: the one path of every extension request. It
// parses and checks the request, bounds its work by BackendTimeout, runs it,
// and writes and logs the answer, or the failure (fail).
func (s *Server) extension(e endpoint) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		o := &outcome{endpoint: e.name, start: time.Now()}
		req, err := s.Validator.Parse(w, r, e.hostOptional)
		if err != nil {
			s.fail(w, r, o, err)
			return
		}
		o.host = req.Host
		ctx, cancel := context.WithTimeout(r.Context(), s.BackendTimeout)
		defer cancel()
		resp, err := e.work(&job{Request: req, ctx: ctx, r: r, o: o})
		if err != nil {
			s.fail(w, r, o, err)
			return
		}
		if resp.contentType != "" {
			w.Header().Set("Content-Type", resp.contentType)
		}
		w.WriteHeader(http.StatusOK)
		w.Write(resp.body)
		s.Log.Info("request served",
			slog.String("endpoint", o.endpoint),
			slog.String("host", o.host),
			slog.String("remote", r.RemoteAddr),
			slog.Int("status", http.StatusOK),
			slog.Float64("duration_seconds", time.Since(o.start).Seconds()),
			slog.Float64("backend_seconds", o.backend.Seconds()))
	}
}

// fail answers r with the status err maps to (statusOf) and an empty body
// (callers that do not use curl --fail take any body for join data), then
// logs why and counts it. A request whose caller went away is client_gone,
// whatever its error.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, o *outcome, err error) {
	if r.Context().Err() != nil {
		err = fmt.Errorf("%w: %w", ErrClientGone, err)
	}
	st := statusOf(err, time.Now())
	attrs := []any{
		slog.String("endpoint", o.endpoint),
		slog.String("host", o.host),
		slog.String("remote", r.RemoteAddr),
		slog.Float64("duration_seconds", time.Since(o.start).Seconds()),
		slog.Int("status", st.code),
	}
	var backend *backendError
	switch {
	case st.refusal != nil:
		detail := err.Error()
		if !errors.Is(err, st.refusal) {
			detail = st.refusal.Reason + ": " + detail
		}
		metrics.Refusals.WithLabelValues(o.endpoint, st.refusal.Reason).Inc()
		s.Log.Warn("request refused", append(attrs,
			slog.String("reason", st.refusal.Reason), slog.String("detail", detail))...)
	case errors.As(err, &backend):
		metrics.BackendFailures.WithLabelValues(st.backend).Inc()
		s.Log.Error("backend failed", append(attrs,
			slog.String("backend", st.backend), slog.String("error", redact.String(backend.err.Error())))...)
	default:
		s.Log.Error("request failed", append(attrs, slog.String("error", redact.String(err.Error())))...)
	}
	for k, v := range st.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(st.code)
}
