package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestManyHostsAcrossReplicas sends, at the same moment, two requests for
// each of 60 hosts, spread over three exec replicas with default flags and
// limits, so that each replica batches creates of many hosts into one
// kubectl run: every request gets 200, every token is the very id and
// secret the cluster holds for that host (none crossed hosts, none handed
// out twice), and no host holds more tokens than it got or than its limit.
//
// It asserts no timing, and 120 requests batched into a few kubectl runs
// are no storm: it runs among the parallel tests.
func TestManyHostsAcrossReplicas(t *testing.T) {
	parallel(t)
	e := env(t)
	const (
		hosts    = 60
		perHost  = 2
		maxPerHP = 3 // -max-tokens-per-host's default
	)
	var servers []*Server
	for range 3 {
		servers = append(servers, e.startServer(t, serverConfig{backend: "exec"}))
	}
	name := func(h int) string { return fmt.Sprintf("mlab1-mh%c%02d.mlab-sandbox.measurement-lab.org", 'a'+h%26, h) }
	n := hosts * perHost
	answers := make([]response, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		body := extensionBody(t, name(i%hosts), "")
		wg.Go(func() {
			<-start
			answers[i], errs[i] = send(http.MethodPost, servers[i%3].URL+"/v2/allocate_k8s_token", body)
		})
	}
	close(start)
	wg.Wait()

	secrets := bootstrapSecrets(t, e) // token id → Secret, one read for all
	got := map[string]int{}           // host → 200s
	seen := map[string]bool{}
	for i, a := range answers {
		host := name(i % hosts)
		if errs[i] != nil {
			t.Fatalf("request %d (%s): %v", i, host, errs[i])
		}
		if a.status != http.StatusOK {
			t.Errorf("request %d (%s): status %d, want 200", i, host, a.status)
			continue
		}
		got[host]++
		var j joinDetails
		if err := json.Unmarshal(a.body, &j); err != nil {
			t.Fatalf("request %d (%s): %v", i, host, err)
		}
		if seen[j.Token] {
			t.Errorf("request %d (%s): a token handed out twice", i, host)
		}
		seen[j.Token] = true
		id, secret, _ := strings.Cut(j.Token, ".")
		s, ok := secrets[id]
		switch {
		case !ok:
			t.Errorf("request %d (%s): got token id %s, which the cluster does not hold", i, host, id)
		case string(s.Data["token-secret"]) != secret:
			t.Errorf("request %d (%s): got token id %s, but the cluster holds another secret for it", i, host, id)
		case string(s.Data["description"]) != description(host):
			t.Errorf("request %d (%s): token %s is described %q: it crossed hosts", i, host, id, s.Data["description"])
		}
		if j.CAHash != e.cp.PKI.CAHash() {
			t.Errorf("request %d (%s): ca_hash %s, want the cluster's %s", i, host, j.CAHash, e.cp.PKI.CAHash())
		}
	}
	live := map[string]int{} // description → live tokens
	for _, s := range secrets {
		if exp, err := time.Parse(time.RFC3339, string(s.Data["expiration"])); err == nil && exp.After(time.Now()) {
			live[string(s.Data["description"])]++
		}
	}
	for h := range hosts {
		host := name(h)
		live := live[description(host)]
		if live > maxPerHP || live != got[host] {
			t.Errorf("%s: %d live tokens in the cluster, %d handed out: want them equal and at most %d", host, live, got[host], maxPerHP)
		}
	}
}
