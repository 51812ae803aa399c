package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestWatchesOutliveRequestTimeout runs the api backend, whose API requests
// each have at most 10 s, for 25 s on a control plane of its own, and
// counts with the API server's apiserver_request_total the watches on
// Nodes and Secrets that ended: none, since the informers watch on a
// client without that limit (a watch ends only when the API server ends
// it, after the 5-10 minutes the reflector asks for). With the limit,
// each informer's watch would be cut and renewed every 10 s: at least 4.
func TestWatchesOutliveRequestTimeout(t *testing.T) {
	waiting(t)
	e := privateEnv(t, true, false)
	e.startServer(t, serverConfig{backend: "api"})
	waitSecretLists(t, e, 1)
	ended := func() int {
		n := 0
		for _, resource := range []string{"nodes", "secrets"} {
			for key, c := range apiRequests(t, e, resource) {
				if strings.HasPrefix(key, "WATCH ") {
					n += c
				}
			}
		}
		return n
	}
	before := ended()
	time.Sleep(25 * time.Second)
	if got := ended() - before; got != 0 {
		t.Errorf("%d watches on Nodes or Secrets ended in 25 s, want none: the per-request timeout cuts them", got)
	}
}
