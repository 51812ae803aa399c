package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/m-lab/epoxy-extensions/loadtest/storm"
	"github.com/m-lab/epoxy-extensions/token"
)

// secretRequestRE matches the API server's own count of requests, by
// resource, verb and code: apiserver_request_total{…,resource="secrets",…,verb="POST",…} N.
var secretRequestRE = regexp.MustCompile(`^apiserver_request_total\{(.*)\} ([0-9.e+]+)$`)

// secretRequests scrapes the API server's /metrics and returns its count
// of requests on Secrets by verb and code ("POST 201", "GET 200", "LIST
// 200", "WATCH 200"…), every client together. Watches count when they end.
func secretRequests(t *testing.T, e *testEnv) map[string]int {
	t.Helper()
	return apiRequests(t, e, "secrets")
}

// apiRequests is secretRequests for any core resource ("nodes").
func apiRequests(t *testing.T, e *testEnv, resource string) map[string]int {
	t.Helper()
	status, body := apiDo(t, e, http.MethodGet, "/metrics", nil)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics on the API server = %d", status)
	}
	counts := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := secretRequestRE.FindStringSubmatch(sc.Text())
		if m == nil || !strings.Contains(m[1], `resource="`+resource+`"`) || !strings.Contains(m[1], `subresource=""`) {
			continue
		}
		verb := labelValue(m[1], "verb") + " " + labelValue(m[1], "code")
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Fatalf("apiserver_request_total value %q: %v", m[2], err)
		}
		counts[verb] += int(v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return counts
}

// retriedCreates returns how many Secret creates the servers say failed in
// a way they retry (timeout, 429, 5xx, unreachable), from their own
// epoxy_extensions_kube_api_errors_total: each may cost its repeat and a
// Get that checks whether a lost answer's Secret is its own.
func retriedCreates(t *testing.T, servers []*Server) int {
	t.Helper()
	n := 0
	for _, s := range servers {
		got := do(t, http.MethodGet, s.URL+"/metrics", nil)
		for line := range strings.Lines(string(got.body)) {
			rest, ok := strings.CutPrefix(strings.TrimSpace(line), "epoxy_extensions_kube_api_errors_total{")
			if !ok {
				continue
			}
			labels, value, _ := strings.Cut(rest, "} ")
			if labelValue(labels, "operation") != "create_secret" {
				continue
			}
			switch labelValue(labels, "reason") {
			case "timeout", "too_many_requests", "server_error", "unreachable":
				v, err := strconv.ParseFloat(value, 64)
				if err != nil {
					t.Fatalf("epoxy_extensions_kube_api_errors_total value %q: %v", value, err)
				}
				n += int(v)
			}
		}
	}
	return n
}

func labelValue(labels, name string) string {
	_, rest, ok := strings.Cut(labels, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// delta returns after minus before, verb by verb, and their sum.
func delta(before, after map[string]int) (map[string]int, int) {
	d, sum := map[string]int{}, 0
	for verb, n := range after {
		if n -= before[verb]; n != 0 {
			d[verb] = n
			sum += n
		}
	}
	return d, sum
}

// waitSecretLists waits until the API server has answered at least n lists
// of Secrets: the servers' caches have asked for their first fill.
func waitSecretLists(t *testing.T, e *testEnv, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		lists := 0
		for key, c := range secretRequests(t, e) {
			if strings.HasPrefix(key, "LIST ") {
				lists += c
			}
		}
		if lists >= n {
			return
		}
	}
	t.Fatalf("the API server saw fewer than %d lists of Secrets in 30 s: the servers' caches never filled", n)
}

// readyPoller polls GET /ready on every server every interval until
// stopped, and counts the answers other than 200.
type readyPoller struct {
	polls, failures atomic.Int64
	stop            chan struct{}
	wg              sync.WaitGroup
}

func pollReady(servers []*Server, interval time.Duration) *readyPoller {
	p := &readyPoller{stop: make(chan struct{})}
	for _, s := range servers {
		p.wg.Go(func() {
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-p.stop:
					return
				case <-t.C:
				}
				r, err := send(http.MethodGet, s.URL+"/ready", nil)
				p.polls.Add(1)
				if err != nil || r.status != http.StatusOK {
					p.failures.Add(1)
				}
			}
		})
	}
	return p
}

// Stop ends the polling and returns how many polls there were and how many
// did not answer 200.
func (p *readyPoller) Stop() (polls, failures int64) {
	close(p.stop)
	p.wg.Wait()
	return p.polls.Load(), p.failures.Load()
}

// wave has each of hosts ask servers (round-robin, shifted by shift) for a
// v2 token at the same moment, and returns the answers and the wall time.
func wave(t *testing.T, servers []*Server, hosts []string, shift int) ([]response, time.Duration) {
	t.Helper()
	bodies := make([][]byte, len(hosts))
	for i, h := range hosts {
		bodies[i] = extensionBody(t, h, "")
	}
	responses := make([]response, len(hosts))
	errs := make([]error, len(hosts))
	wall := storm.Release(len(hosts), func(i int) {
		responses[i], errs[i] = send(http.MethodPost, servers[(i+shift)%len(servers)].URL+"/v2/allocate_k8s_token", bodies[i])
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", hosts[i], err)
		}
	}
	return responses, wall
}

// statuses counts responses by status.
func statuses(responses []response) map[int]int {
	n := map[int]int{}
	for _, r := range responses {
		n[r.status]++
	}
	return n
}

// p99 returns the 99th percentile of the responses' latencies.
func p99(responses []response) time.Duration {
	var l []time.Duration
	for _, r := range responses {
		l = append(l, r.elapsed)
	}
	slices.Sort(l)
	return storm.Percentile(l, 99)
}

// rawCreateRate creates n bootstrap-token Secrets on the API server with
// client-go, no client-side rate limit, from workers goroutines, and
// returns the creates per second: what the API server itself can take.
func rawCreateRate(t *testing.T, e *testEnv, n, workers int) float64 {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", e.cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	secrets := cs.CoreV1().Secrets(metav1.NamespaceSystem)
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				host := fmt.Sprintf("mlab1-raw%04d.mlab-sandbox.measurement-lab.org", i)
				s := token.BootstrapSecret(token.SlotID(host, 0), "0123456789abcdef", "raw capacity", time.Now().Add(5*time.Minute))
				if _, err := secrets.Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if f := failed.Load(); f > 0 {
		t.Errorf("%d of %d raw creates failed", f, n)
	}
	return float64(n) / elapsed.Seconds()
}
