package handler

import (
	"log/slog"
	"net/http"

	"github.com/m-lab/epoxy-extensions/redact"
)

// Drain makes /ready answer 503 from now on, while every other endpoint
// keeps serving: the first step of a shutdown.
func (s *Server) Drain() { s.draining.Store(true) }

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
