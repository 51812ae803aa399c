package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/token"

	"github.com/m-lab/epoxy-extensions/loadtest/storm"
)

// TestStorm500Replicas has 500 machines ask for a token at the same moment,
// spread round-robin over three server processes against one API server,
// with the default limit (3 live tokens per host): every machine gets its
// own token, in its host's first slot, and none is refused.
func TestStorm500Replicas(t *testing.T) {
	e := env(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		const machines = 500
		var servers []*Server
		for range 3 {
			servers = append(servers, e.startServer(t, serverConfig{backend: backend, args: []string{"-backend-timeout", "5m"}}))
		}
		hosts := make([]string, machines)
		bodies := make([][]byte, machines)
		for i := range hosts {
			hosts[i] = fmt.Sprintf("mlab1-r%03d.mlab-sandbox.measurement-lab.org-%s", i, backend)
			bodies[i] = extensionBody(t, hosts[i], "")
		}
		responses := make([]response, machines)
		errs := make([]error, machines)
		wall := storm.Release(machines, func(i int) {
			responses[i], errs[i] = send(http.MethodPost, servers[i%3].URL+"/v2/allocate_k8s_token", bodies[i])
		})
		var latencies []time.Duration
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s: %v", hosts[i], err)
			}
			latencies = append(latencies, responses[i].elapsed)
		}
		slices.Sort(latencies)
		t.Logf("%s: %d machines over 3 replicas: wall %s, p50 %s, p99 %s", backend, machines, wall.Round(time.Millisecond),
			storm.Percentile(latencies, 50).Round(time.Millisecond), storm.Percentile(latencies, 99).Round(time.Millisecond))
		checkJoinTokens(t, e, hosts, responses)
		for i, got := range responses {
			var join struct{ Token string }
			if json.Unmarshal(got.body, &join) != nil {
				continue // reported above
			}
			if id, _, _ := strings.Cut(join.Token, "."); id != token.SlotID(hosts[i], 0) {
				t.Errorf("%s: token id %s, want its first slot's %s", hosts[i], id, token.SlotID(hosts[i], 0))
				break
			}
		}
	})
}
