package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/loadtest/storm"
	"github.com/m-lab/epoxy-extensions/token"
)

// TestStorm500Replicas has 500 machines ask for a token at the same moment,
// spread round-robin over three server processes against one API server,
// with the default limit (3 live tokens per host): every machine gets its
// own token, in its host's first slot, and none is refused. With the exec
// backend each replica may run only 4 kubectl at once
// (-max-concurrent-commands 4) and never runs more; the deadline is long
// enough that no request is shed. The wall time, latencies, each replica's
// peak memory and peak kubectl count are logged (go test -v).
func TestStorm500Replicas(t *testing.T) {
	alone(t)
	e := env(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		const (
			machines = 500
			replicas = 3
			slots    = 4
		)
		// 500 runs through a few slots on 2 slow cores: every request
		// must be able to wait for its turn rather than be shed with 503.
		args := []string{"-backend-timeout", "5m"}
		if backend == "exec" {
			args = append(args, "-max-concurrent-commands", strconv.Itoa(slots))
		}
		var servers []*Server
		for range replicas {
			servers = append(servers, e.startServer(t, serverConfig{backend: backend, args: args}))
		}
		hosts := make([]string, machines)
		bodies := make([][]byte, machines)
		for i := range hosts {
			hosts[i] = fmt.Sprintf("mlab1-r%03d.mlab-sandbox.measurement-lab.org-%s", i, backend)
			bodies[i] = extensionBody(t, hosts[i], "")
		}
		responses := make([]response, machines)
		errs := make([]error, machines)
		// Each replica's kubectl children, every 10 ms while the storm
		// lasts.
		samplers := make([]*peakSampler, replicas)
		for i, s := range servers {
			samplers[i] = samplePeak(s.Pid(), "kubectl", 10*time.Millisecond)
		}
		wall := storm.Release(machines, func(i int) {
			responses[i], errs[i] = send(http.MethodPost, servers[i%replicas].URL+"/v2/allocate_k8s_token", bodies[i])
		})
		peaks := make([]int, replicas)
		for i, sampler := range samplers {
			peaks[i] = sampler.Stop()
		}
		var latencies []time.Duration
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s: %v", hosts[i], err)
			}
			latencies = append(latencies, responses[i].elapsed)
		}
		slices.Sort(latencies)
		t.Logf("%s: %d machines over %d replicas: wall %s, p50 %s, p99 %s, max %s", backend, machines, replicas, wall.Round(time.Millisecond),
			storm.Percentile(latencies, 50).Round(time.Millisecond), storm.Percentile(latencies, 99).Round(time.Millisecond),
			latencies[len(latencies)-1].Round(time.Millisecond))
		for i, s := range servers {
			t.Logf("replica %d: VmHWM %s (race detector in the server: %v), peak kubectl children %d", i, procStatus(s.Pid(), "VmHWM"), raceEnabled, peaks[i])
		}
		if backend == "exec" {
			for i, peak := range peaks {
				if peak > slots {
					t.Errorf("replica %d: peak kubectl processes at once = %d, want at most %d (-max-concurrent-commands)", i, peak, slots)
				}
			}
			if slices.Max(peaks) == 0 {
				t.Errorf("never saw a kubectl child of a replica: the sampling is broken")
			}
		}
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
