package handler

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

// goneTokens fails as a backend does when its caller's context ends: with
// an error that wraps the context's and says overload, as a wait for a
// command slot does.
type goneTokens struct{}

type overload struct{ error }

func (overload) Overloaded() bool { return true }

func (goneTokens) Create(ctx context.Context, _ string) (joincmd.Join, error) {
	<-ctx.Done()
	return joincmd.Join{}, overload{fmt.Errorf("waited for a slot: %w", ctx.Err())}
}

// TestClientGone checks that a request whose caller went away is counted as
// client_gone, with status 499: neither a backend failure nor a 503.
func TestClientGone(t *testing.T) {
	s, _ := testServer(goneTokens{}, &fakeNodes{}, &fakeCreds{}, now)
	gone := metrics.Refusals.WithLabelValues(endpointTokenV2, "client_gone")
	busy := metrics.Refusals.WithLabelValues(endpointTokenV2, "busy")
	failures := metrics.BackendFailures.WithLabelValues("kubeadm")
	before := []float64{testutil.ToFloat64(gone), testutil.ToFloat64(busy), testutil.ToFloat64(failures)}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := httptest.NewRecorder()
	r := httptest.NewRequestWithContext(ctx, "POST", "/v2/allocate_k8s_token", strings.NewReader(body(machine, now, "")))
	NewMux(s, prometheus.NewRegistry()).ServeHTTP(rec, r)

	if rec.Code != StatusClientClosedRequest {
		t.Errorf("status = %d, want %d", rec.Code, StatusClientClosedRequest)
	}
	after := []float64{testutil.ToFloat64(gone), testutil.ToFloat64(busy), testutil.ToFloat64(failures)}
	for i, want := range []float64{1, 0, 0} {
		if d := after[i] - before[i]; d != want {
			t.Errorf("metric %d changed by %v, want %v (client_gone, busy, backend failures)", i, d, want)
		}
	}
}
