package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSIGTERMDuringStorm sends SIGTERM while 40 token requests are in
// flight (in a slowed kubectl run, or queued for the next), with -shutdown-delay 3s: /ready answers 503 from
// the signal on while / still answers 200, requests on connections opened
// during the delay are served, and every request accepted gets its token
// before the server exits with status 0.
func TestSIGTERMDuringStorm(t *testing.T) {
	alone(t)
	const inFlight, late = 40, 10
	e := env(t)
	binDir := slowBinDir(t, e)
	s := e.startServer(t, serverConfig{binDir: binDir, args: []string{
		"-max-concurrent-commands", strconv.Itoa(inFlight + late),
		"-backend-timeout", "2m",
		"-shutdown-delay", "3s",
	}})
	if got := do(t, http.MethodGet, s.URL+"/ready", nil); got.status != http.StatusOK {
		t.Fatalf("GET /ready before SIGTERM = %d, want 200", got.status)
	}

	hosts := make([]string, inFlight+late)
	responses := make([]response, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	ask := func(i int) {
		body := extensionBody(t, hosts[i], "")
		wg.Go(func() { responses[i], errs[i] = sendNewConn(s.URL+"/v2/allocate_k8s_token", body) })
	}
	for i := range hosts {
		hosts[i] = fmt.Sprintf("mlab1-t%03d.mlab-sandbox.measurement-lab.org", i)
	}
	for i := range inFlight {
		ask(i)
	}
	waitInFlight(t, s, inFlight)
	signalled := time.Now()
	if err := s.Terminate(); err != nil {
		t.Fatal(err)
	}
	// /ready is 503 from the signal on; / still answers.
	var readyOK atomic.Int32
	var firstNotReady time.Duration
	for time.Since(signalled) < 2500*time.Millisecond {
		got, err := sendNewConn(s.URL+"/ready", nil)
		if err != nil {
			t.Fatalf("GET /ready during the delay: %v", err)
		}
		if got.status == http.StatusOK {
			readyOK.Add(1)
		} else if firstNotReady == 0 {
			firstNotReady = time.Since(signalled)
		}
		if firstNotReady > 0 && time.Since(signalled) > 500*time.Millisecond {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("/ready 503 %s after SIGTERM (%d answers of 200 before)", firstNotReady.Round(time.Millisecond), readyOK.Load())
	if firstNotReady == 0 || firstNotReady > 500*time.Millisecond {
		t.Errorf("/ready turned 503 after %s, want at once", firstNotReady)
	}
	if got, err := sendNewConn(s.URL+"/", nil); err != nil || got.status != http.StatusOK {
		t.Errorf("GET / during the delay = %v %v, want 200", got.status, err)
	}
	// Machines that connect during the delay are still served.
	for i := inFlight; i < inFlight+late; i++ {
		ask(i)
	}
	wg.Wait()
	checkDrained(t, e, s, hosts, responses, errs)
}

// sendNewConn is send on a connection of its own, as each booting machine
// has: no pooled connection that a draining server would close.
func sendNewConn(url string, body []byte) (response, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	method := http.MethodGet
	if body != nil {
		method = http.MethodPost
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytesReader(body))
	if err != nil {
		return response{}, err
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := readAll(resp)
	return response{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type"), body: b,
		elapsed: time.Since(start), retryAfter: resp.Header.Get("Retry-After")}, err
}

// TestIdleConnections opens 5000 connections that send nothing to one
// server (above its -max-connections 4096) and checks that a booting
// machine's token request on a new connection still succeeds within a
// second, and that / still answers.
func TestIdleConnections(t *testing.T) {
	alone(t)
	const idle = 5000
	e := env(t)
	s := e.startServer(t, serverConfig{backend: "api"})
	addr := s.URL[len("http://"):]
	conns := make([]net.Conn, 0, idle)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range idle {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("after %d connections: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	time.Sleep(1500 * time.Millisecond) // every idle connection is past its grace
	for _, tc := range []struct{ name, path string }{{"token", "/v2/allocate_k8s_token"}, {"health", "/"}} {
		var body []byte
		if tc.path != "/" {
			body = extensionBody(t, "mlab1-idl01.mlab-sandbox.measurement-lab.org", "")
		}
		got, err := sendNewConn(s.URL+tc.path, body)
		if err != nil || got.status != http.StatusOK {
			t.Fatalf("%s with %d idle connections: %v %v, want 200", tc.name, idle, got.status, err)
		}
		t.Logf("%s answered in %s with %d idle connections open", tc.name, got.elapsed.Round(time.Millisecond), idle)
		if got.elapsed > time.Second {
			t.Errorf("%s took %s, want under a second", tc.name, got.elapsed)
		}
	}
	m := do(t, http.MethodGet, s.URL+"/metrics", nil)
	if !regexp.MustCompile(`(?m)^epoxy_extensions_connections_evicted_total [1-9]`).Match(m.body) {
		t.Errorf("no idle connection was evicted: the limit was never reached")
	}
	if v := regexp.MustCompile(`(?m)^epoxy_extensions_open_connections (\d+)`).FindSubmatch(m.body); v == nil {
		t.Errorf("no open connections gauge")
	} else if n, _ := strconv.Atoi(string(v[1])); n > 4096+16 {
		t.Errorf("%d connections open, want at most the limit 4096 and its reserve", n)
	} else {
		t.Logf("%d connections open", n)
	}
}

func bytesReader(b []byte) io.Reader {
	if b == nil {
		return nil
	}
	return bytes.NewReader(b)
}

func readAll(resp *http.Response) ([]byte, error) { return io.ReadAll(resp.Body) }

// TestRateLimitedIs503 runs the api backend with a client rate limit of one
// request per second and a one-second deadline per API call, and sends 20
// token requests at once: those the limiter cannot grant in time get an
// empty 503 with Retry-After, never a 500.
func TestRateLimitedIs503(t *testing.T) {
	// Alone: the one request the limiter grants must get its Secret within
	// the 1 s deadline, which a loaded API server can miss (a cold run
	// beside the other tests answered it 500 after 2.7 s).
	alone(t)
	const n = 20
	e := env(t)
	s := e.startServer(t, serverConfig{backend: "api", args: []string{
		"-kube-api-qps", "1", "-kube-api-burst", "1", "-command-timeout", "1s"}})
	time.Sleep(time.Second) // the start-up version check spent the burst
	responses := make([]response, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		body := extensionBody(t, fmt.Sprintf("mlab1-q%03d.mlab-sandbox.measurement-lab.org", i), "")
		wg.Go(func() { responses[i], errs[i] = send(http.MethodPost, s.URL+"/v2/allocate_k8s_token", body) })
	}
	wg.Wait()
	codes := map[int]int{}
	for i, got := range responses {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		codes[got.status]++
		if got.status == http.StatusServiceUnavailable && (got.retryAfter == "" || len(got.body) != 0) {
			t.Errorf("503 with Retry-After %q and body %q, want a Retry-After and no body", got.retryAfter, got.body)
		}
	}
	t.Logf("status codes: %v", codes)
	if codes[http.StatusOK] < 1 || codes[http.StatusServiceUnavailable] < 1 || codes[http.StatusOK]+codes[http.StatusServiceUnavailable] != n {
		t.Errorf("status codes %v, want some 200, some 503, nothing else", codes)
	}
}
