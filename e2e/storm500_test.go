package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/loadtest/storm"
)

// TestStorm500 has 500 machines ask for a token at the same moment, with
// the server allowed only 4 kubeadm processes at once and a deadline long
// enough that none is shed: every machine gets its own working token, and
// the server never runs more than 4 kubeadm. The wall time, latencies, the
// server's peak memory and the peak kubeadm count are logged (go test -v).
func TestStorm500(t *testing.T) {
	const (
		machines = 500
		slots    = 4
	)
	e := env(t)
	s := e.startServer(t, serverConfig{args: []string{
		"-max-concurrent-commands", strconv.Itoa(slots),
		// 500 runs through 4 slots on 2 slow cores: every request must be
		// able to wait for its turn rather than be shed with 503.
		"-backend-timeout", "5m",
	}})

	hosts := make([]string, machines)
	bodies := make([][]byte, machines)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("mlab1-s%03d.mlab-sandbox.measurement-lab.org", i)
		bodies[i] = extensionBody(t, hosts[i], "")
	}
	responses := make([]response, machines)
	errs := make([]error, machines)
	// Processes whose parent is the server and whose name is kubeadm,
	// every 10 ms while the storm lasts.
	sampler := samplePeak(s.Pid(), "kubeadm", 10*time.Millisecond)
	wall := storm.Release(machines, func(i int) {
		responses[i], errs[i] = send(http.MethodPost, s.URL+"/v2/allocate_k8s_token", bodies[i])
	})
	peak := sampler.Stop()
	hwm := procStatus(s.Pid(), "VmHWM")

	var latencies []time.Duration
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", hosts[i], err)
			continue
		}
		latencies = append(latencies, responses[i].elapsed)
	}
	if t.Failed() {
		t.FailNow() // a transport error; the responses are incomplete
	}
	slices.Sort(latencies)
	t.Logf("%d machines, -max-concurrent-commands %d: wall time %s, latency p50 %s, p99 %s, max %s",
		machines, slots, wall.Round(time.Millisecond), storm.Percentile(latencies, 50).Round(time.Millisecond),
		storm.Percentile(latencies, 99).Round(time.Millisecond), latencies[len(latencies)-1].Round(time.Millisecond))
	t.Logf("server VmHWM %s (race detector in the server: %v); peak kubeadm children %d", hwm, raceEnabled, peak)

	if peak > slots {
		t.Errorf("peak kubeadm processes at once = %d, want at most %d (-max-concurrent-commands)", peak, slots)
	}
	if peak == 0 {
		t.Errorf("never saw a kubeadm child of the server (pid %d): the sampling is broken", s.Pid())
	}
	checkJoinTokens(t, e, hosts, responses)
}

// checkJoinTokens checks the answers to v2 token requests, hosts[i] having
// got responses[i]: every one is 200 with a well-formed token, no two tokens
// are the same, and each token's Secret, listed with one kubectl call,
// holds its secret and a description naming its own host.
func checkJoinTokens(t *testing.T, e *testEnv, hosts []string, responses []response) {
	t.Helper()
	const shown = 10 // failures reported one by one; the rest are counted
	failures := 0
	report := func(format string, args ...any) {
		t.Helper()
		if failures++; failures <= shown {
			t.Errorf(format, args...)
		}
	}
	tokens := map[string]string{} // token → host
	ids := make([]string, len(hosts))
	secretParts := make([]string, len(hosts))
	for i, got := range responses {
		if got.status != http.StatusOK {
			report("%s: status %d after %s, want 200", hosts[i], got.status, got.elapsed.Round(time.Millisecond))
			continue
		}
		var join struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(got.body, &join); err != nil {
			report("%s: body %q: %v", hosts[i], got.body, err)
			continue
		}
		m := tokenRE.FindStringSubmatch(join.Token)
		if m == nil {
			report("%s: token %q, want ID.SECRET", hosts[i], join.Token)
			continue
		}
		if other, dup := tokens[join.Token]; dup {
			report("%s and %s got the same token", other, hosts[i])
		}
		tokens[join.Token] = hosts[i]
		ids[i], secretParts[i] = m[1], m[2]
	}
	if len(tokens) != len(hosts) {
		t.Errorf("%d distinct tokens, want %d", len(tokens), len(hosts))
	}

	secrets := bootstrapSecretsKubectl(t, e)
	for i, id := range ids {
		if id == "" {
			continue
		}
		sec, ok := secrets[id]
		if !ok {
			report("%s: no Secret bootstrap-token-%s for its token", hosts[i], id)
			continue
		}
		if got, want := string(sec.Data["description"]), description(hosts[i]); got != want {
			report("%s: its token's description = %q, want %q", hosts[i], got, want)
		}
		if string(sec.Data["token-secret"]) != secretParts[i] {
			report("%s: its Secret's token-secret differs from the token it got", hosts[i])
		}
	}
	if failures > shown {
		t.Errorf("... and %d more failures like these", failures-shown)
	}
}
