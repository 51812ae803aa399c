package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestThrottledIsBusyNotUnready saturates the api backend's client-side
// rate limiter (-kube-api-qps 1, -kube-api-burst 1) with 30 token requests
// at once, each allowed 15 s, for longer than the readiness check's 10 s
// cache: the requests the limiter cannot grant in time get 503 with
// Retry-After, the others their tokens, and /ready, polled every 100 ms
// throughout, stays 200, since the readiness check has a client and a rate
// limiter of its own. (On the token client it would find the limiter
// booked 15 s ahead, past its 5 s deadline.)
func TestThrottledIsBusyNotUnready(t *testing.T) {
	parallel(t)
	const n = 30
	e := env(t)
	s := e.startServer(t, serverConfig{backend: "api", args: []string{
		"-kube-api-qps", "1", "-kube-api-burst", "1", "-command-timeout", "15s", "-backend-timeout", "20s"}})
	if got := do(t, http.MethodGet, s.URL+"/ready", nil); got.status != http.StatusOK {
		t.Fatalf("/ready before the storm = %d, want 200", got.status)
	}
	ready := pollReady([]*Server{s}, 100*time.Millisecond)
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("mlab1-b%03d.mlab-sandbox.measurement-lab.org", i)
	}
	responses, wall := wave(t, []*Server{s}, hosts, 0)
	// Past the readiness check's 10 s cache even if the storm was short.
	time.Sleep(12*time.Second - wall)
	polls, failures := ready.Stop()
	codes := statuses(responses)
	t.Logf("%d requests in %s: %v; /ready polled %d times, %d not 200", n, wall.Round(time.Millisecond), codes, polls, failures)
	if codes[http.StatusOK] < 1 || codes[http.StatusServiceUnavailable] < 1 || codes[http.StatusOK]+codes[http.StatusServiceUnavailable] != n {
		t.Errorf("status codes %v, want some 200, some 503, nothing else", codes)
	}
	for _, r := range responses {
		if r.status == http.StatusServiceUnavailable && (r.retryAfter == "" || len(r.body) != 0) {
			t.Errorf("503 with Retry-After %q and body %q, want a Retry-After and no body", r.retryAfter, r.body)
			break
		}
	}
	if polls < 100 || failures != 0 {
		t.Errorf("/ready: %d of %d polls not 200, want none of at least 100", failures, polls)
	}
}
