package handler

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

// noopTokens returns a fixed join at no cost, so a benchmark measures the
// server alone.
type noopTokens struct{}

func (noopTokens) Create(context.Context, string) (joincmd.Join, error) {
	return joincmd.Join{APIAddress: "192.0.2.1:6443", Token: "abcdef.0123456789abcdef", CAHash: "sha256:" + strings.Repeat("0", 64)}, nil
}

// BenchmarkTokenRequest is the server's own cost of one v2 token request:
// routing, validation, metrics, logging and the JSON answer, with a no-op
// backend.
func BenchmarkTokenRequest(b *testing.B) {
	s, _ := testServer(noopTokens{}, &fakeNodes{}, &fakeCreds{}, time.Now())
	s.Log = slog.New(slog.NewJSONHandler(io.Discard, nil))
	mux := NewMux(s, prometheus.NewRegistry())
	reqBody := body(machine, time.Now(), "")
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("POST", "/v2/allocate_k8s_token", strings.NewReader(reqBody))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, r)
		if rec.Code != 200 {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
