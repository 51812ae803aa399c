package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/m-lab/epoxy/extension"
)

// kubeBackends are the values of -kube-backend. Every case that reaches
// Kubernetes runs once with each, so the two stay interchangeable.
var kubeBackends = []string{"exec", "api"}

// forEachBackend runs f as a subtest named after each Kubernetes backend.
func forEachBackend(t *testing.T, f func(t *testing.T, backend string)) {
	t.Helper()
	for _, b := range kubeBackends {
		t.Run(b, func(t *testing.T) { f(t, b) })
	}
}

// serverConfig is how a test wants its server run.
type serverConfig struct {
	backend string            // -kube-backend; the server's default (exec) when empty
	args    []string          // extra flags
	env     []string          // extra environment
	binDir  string            // -bin-dir; the real kubeadm and kubectl when empty
	hosts   map[string]string // name → IPv4 address served to it by a DNS server (-dns-server); none when nil
	addr    string            // -listen-address, one or several; a free loopback port when empty
	socket  *net.TCPListener  // a socket passed as systemd does (socket activation); see ServerOptions.Socket
}

// startServer starts the server under test against the shared components
// and stops it at the end of the test, which fails if the server does not
// exit cleanly (a race-enabled server exits 66 after a data race). Its log is
// shown when the test fails.
func (e *testEnv) startServer(t *testing.T, cfg serverConfig) *Server {
	t.Helper()
	binDir := cfg.binDir
	if binDir == "" {
		binDir = e.cp.BinDir
	}
	// No delay between SIGTERM and the drain unless a test asks for one: a
	// later -shutdown-delay in cfg.args wins.
	args := []string{"-bin-dir", binDir, "-kubeconfig", e.cp.Kubeconfig, "-shutdown-delay", "0s"}
	if cfg.backend != "" {
		args = append(args, "-kube-backend", cfg.backend)
	}
	opts := ServerOptions{
		Addr:   cfg.addr,
		Socket: cfg.socket,
		Binary: e.serverBinary(t),
		Args:   append(args, cfg.args...),
		Env:    append([]string{"DATASTORE_EMULATOR_HOST=" + e.emu.Host}, cfg.env...),
	}
	if cfg.hosts != nil {
		opts.Args = append(opts.Args, "-dns-server", startDNS(t, cfg.hosts))
	}
	s, err := StartServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	stopAtEnd(t, s)
	return s
}

// stopAtEnd stops s at the end of t, which fails unless s exits cleanly (a
// race-enabled server exits 66 after a data race), and shows its log when t
// failed.
func stopAtEnd(t *testing.T, s *Server) {
	t.Cleanup(func() {
		if err := s.Stop(90 * time.Second); err != nil {
			t.Errorf("stopping the server: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", s.Log())
		}
	})
}

// startDNS serves records on a DNS server until the test ends, and returns
// its address.
func startDNS(t *testing.T, records map[string]string) string {
	t.Helper()
	dns, err := StartDNS(records)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dns.Close)
	return dns.Addr
}

// extensionBody is the body ePoxy sends for host, which booted a minute ago.
func extensionBody(t *testing.T, host, rawQuery string) []byte {
	t.Helper()
	b, err := json.Marshal(extension.Request{V1: &extension.V1{
		Hostname: host,
		LastBoot: time.Now().Add(-time.Minute),
		RawQuery: rawQuery,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// response is what the server answered, and how long it took.
type response struct {
	status      int
	contentType string
	body        []byte
	elapsed     time.Duration
	retryAfter  string
}

// client has no timeout of its own: the server must bound every request.
var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}

// post sends body to path on s as ePoxy does (with curl's form content type,
// which the server must ignore).
func post(t *testing.T, s *Server, path string, body []byte) response {
	t.Helper()
	return do(t, http.MethodPost, s.URL+path, body)
}

func do(t *testing.T, method, url string, body []byte) response {
	t.Helper()
	r, err := send(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is do for goroutines other than the test's, which must not call
// t.Fatal.
func send(method, url string, body []byte) (response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: reading the body: %w", method, url, err)
	}
	return response{resp.StatusCode, resp.Header.Get("Content-Type"), b, time.Since(start), resp.Header.Get("Retry-After")}, nil
}

// checkHealthy fails unless GET / answers 200.
func checkHealthy(t *testing.T, s *Server) {
	t.Helper()
	if got := do(t, http.MethodGet, s.URL+"/", nil); got.status != http.StatusOK {
		t.Errorf("GET / = %d, want 200", got.status)
	}
}

// apiDo calls the API server as admin and fails the test on transport errors.
func apiDo(t *testing.T, e *testEnv, method, path string, in any) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	status, body, err := e.cp.API.Do(ctx, method, path, in)
	if err != nil {
		t.Fatalf("%s %s on the API server: %v", method, path, err)
	}
	return status, body
}

// apiGet decodes the object at path into out and fails unless it exists.
func apiGet(t *testing.T, e *testEnv, path string, out any) {
	t.Helper()
	status, body := apiDo(t, e, http.MethodGet, path, nil)
	if status != http.StatusOK {
		t.Fatalf("GET %s on the API server = %d %s, want 200", path, status, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}
