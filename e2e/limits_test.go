package e2e

import (
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// newSecretIDs returns the ids in after that are not in before.
func newSecretIDs(before, after map[string]secret) []string {
	var ids []string
	for id := range after {
		if _, ok := before[id]; !ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// TestAllowedSources runs the server with -allowed-sources and asks for a
// token from 127.0.0.1: refused with an empty 403 and no token made when
// loopback is outside the list, served when inside.
func TestAllowedSources(t *testing.T) {
	parallel(t)
	// A control plane of its own: it counts every token in the cluster.
	e := privateEnv(t, true, false)
	tests := []struct {
		name    string
		sources string
		want    int
	}{
		{"caller outside", "192.0.2.0/24", http.StatusForbidden},
		{"caller inside", "127.0.0.0/8", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := e.startServer(t, serverConfig{args: []string{"-allowed-sources", tc.sources}})
			const host = "mlab1-src01.mlab-sandbox.measurement-lab.org"
			before := bootstrapSecrets(t, e)
			got := post(t, s, "/v2/allocate_k8s_token", extensionBody(t, host, ""))
			if got.status != tc.want {
				t.Errorf("status = %d, want %d", got.status, tc.want)
			}
			created := newSecretIDs(before, bootstrapSecrets(t, e))

			if tc.want != http.StatusOK {
				if len(got.body) != 0 {
					t.Errorf("body = %q, want empty", got.body)
				}
				if len(created) != 0 {
					t.Errorf("new bootstrap tokens %q, want none for a refused caller", created)
				}
				// The other extension endpoints are closed to it too; the
				// health, readiness and metrics endpoints stay open.
				for _, path := range []string{"/v1/allocate_k8s_token", "/v1/bmc_store_password", "/v1/node/delete"} {
					got := post(t, s, path, extensionBody(t, host, "p=abc"))
					if got.status != tc.want || len(got.body) != 0 {
						t.Errorf("POST %s = %d %q, want %d and an empty body", path, got.status, got.body, tc.want)
					}
				}
				for _, path := range []string{"/", "/ready", "/metrics"} {
					if got := do(t, http.MethodGet, s.URL+path, nil); got.status != http.StatusOK {
						t.Errorf("GET %s = %d, want 200: only extension endpoints are restricted", path, got.status)
					}
				}
				return
			}
			if len(created) != 1 {
				t.Fatalf("new bootstrap tokens %q, want exactly one", created)
			}
			sec := bootstrapSecret(t, e, created[0])
			if got, want := string(sec.Data["description"]), description(host); got != want {
				t.Errorf("description = %q, want %q", got, want)
			}
		})
	}
}

// TestTokenLimitAcrossReplicas runs three server processes against one API
// server with -max-tokens-per-host 3 and asks for one host's token 30
// times at once, ten to each: exactly 3 get tokens, 27 get an empty 429 with a
// Retry-After no later than the oldest token's expiry. With all three
// restarted, the limit still holds; once the tokens expire (the test's API
// server has no token cleaner: the expired Secrets stay), the host gets 3
// again.
func TestTokenLimitAcrossReplicas(t *testing.T) {
	// Each subtest takes its place among the parallel tests: two rounds of
	// 30 requests must fit well within the TTL, which they may not beside
	// a storm. The test itself takes none, since it waits for them.
	t.Parallel()
	e := env(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		// The two backends use different hosts and mostly wait for the
		// TTL: side by side, the test takes one wait, not two.
		parallel(t)
		testTokenLimitAcrossReplicas(t, e, backend)
	})
}

func testTokenLimitAcrossReplicas(t *testing.T, e *testEnv, backend string) {
	// Long enough for two rounds of 30 requests at once and a restart of
	// the three replicas on a busy 2-core machine: with the exec backend a
	// host at its limit costs two kubectl runs per request (the create
	// that finds slot 0 taken, then one read of all), and creates of one
	// name never share a run; inside make test the two rounds took 40 s.
	const ttl = 90 * time.Second
	host := "mlab1-lim01.mlab-sandbox.measurement-lab.org"
	if backend == "api" {
		host = "mlab2-lim01.mlab-sandbox.measurement-lab.org"
	}
	cfg := serverConfig{backend: backend, args: []string{"-max-tokens-per-host", "3", "-token-ttl", ttl.String(), "-shutdown-delay", "0s"}}
	start := func() []*Server {
		var servers []*Server
		for range 3 {
			servers = append(servers, e.startServer(t, cfg))
		}
		return servers
	}
	round := func(name string, servers []*Server, wantOK int) {
		t.Helper()
		ok, limited := 0, 0
		// All 30 at once, ten to each replica: the limit holds under a race
		// too, and a round takes seconds, not a TTL's share.
		answers := make([]response, 30)
		errs := make([]error, 30)
		body := extensionBody(t, host, "")
		var wg sync.WaitGroup
		for i := range answers {
			wg.Go(func() { answers[i], errs[i] = send(http.MethodPost, servers[i%3].URL+"/v2/allocate_k8s_token", body) })
		}
		wg.Wait()
		for i, got := range answers {
			if errs[i] != nil {
				t.Errorf("%s: request %d: %v", name, i, errs[i])
				continue
			}
			switch got.status {
			case http.StatusOK:
				ok++
			case http.StatusTooManyRequests:
				limited++
				if len(got.body) != 0 {
					t.Errorf("%s: 429 body = %q, want empty", name, got.body)
				}
				secs, err := strconv.Atoi(got.retryAfter)
				if err != nil || secs < 1 || secs > int(ttl.Seconds())+1 {
					t.Errorf("%s: Retry-After = %q, want 1..%d seconds", name, got.retryAfter, int(ttl.Seconds())+1)
				}
			default:
				t.Errorf("%s: request %d: status %d", name, i, got.status)
			}
		}
		if ok != wantOK || limited != 30-wantOK {
			t.Errorf("%s: %d tokens and %d refusals, want %d and %d", name, ok, limited, wantOK, 30-wantOK)
		}
		if got := liveTokens(t, e, host); got != 3 {
			t.Errorf("%s: %d live tokens for %s in the cluster, want 3", name, got, host)
		}
	}
	servers := start()
	began := time.Now()
	round("first", servers, 3)
	for _, s := range servers {
		if err := s.Terminate(); err != nil {
			t.Fatal(err)
		}
		if err := s.Wait(30 * time.Second); err != nil {
			t.Fatalf("stopping a replica: %v", err)
		}
	}
	servers = start()
	round("after restarting every replica", servers, 0)
	if elapsed := time.Since(began); elapsed > ttl-5*time.Second {
		t.Fatalf("the first two rounds took %s, too close to the %s TTL to tell", elapsed, ttl)
	}
	// Wait for the last of the three to expire as the cluster has it: the
	// third token may have been made seconds after began, with a cold
	// kubectl on a loaded machine, and expires TTL after its own request.
	last := lastExpiry(t, e, host)
	t.Logf("the first round's tokens expire %s after it began", last.Sub(began).Round(time.Millisecond))
	// Storms may run meanwhile: the third round needs only the tokens gone.
	outsideStorms(func() { time.Sleep(time.Until(last.Add(2 * time.Second))) })
	round("after the tokens expired", servers, 3)
}

// lastExpiry returns the latest expiration among host's live tokens, as
// their Secrets say.
func lastExpiry(t *testing.T, e *testEnv, host string) time.Time {
	t.Helper()
	var last time.Time
	for _, s := range bootstrapSecrets(t, e) {
		exp, err := time.Parse(time.RFC3339, string(s.Data["expiration"]))
		if string(s.Data["description"]) == description(host) && err == nil && exp.After(last) {
			last = exp
		}
	}
	if last.IsZero() {
		t.Fatalf("no token of %s in the cluster", host)
	}
	return last
}

// liveTokens counts the bootstrap-token Secrets for host that have not
// expired.
func liveTokens(t *testing.T, e *testEnv, host string) int {
	t.Helper()
	n := 0
	for _, s := range bootstrapSecrets(t, e) {
		exp, err := time.Parse(time.RFC3339, string(s.Data["expiration"]))
		if string(s.Data["description"]) == description(host) && err == nil && exp.After(time.Now()) {
			n++
		}
	}
	return n
}
