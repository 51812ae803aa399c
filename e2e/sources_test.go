package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testHost is a machine of the test's own: a network namespace joined to
// this one by a veth pair, with a documentation address (198.51.100.1, then
// .5, .9, … for the next test hosts, each pair in a /30 of its own) that is
// public, not private. Only traffic between it and this machine flows.
type testHost struct {
	ns        string
	Addr      string // the test host's address
	LocalAddr string // this side's address, where servers listen for it
}

// testHosts counts the test hosts made, each getting the next /30.
var testHosts atomic.Int32

// newTestHost makes a test host and removes it at the end of t. Needs root.
func newTestHost(t *testing.T) *testHost {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	n := testHosts.Add(1) - 1
	h := &testHost{ns: "epx" + id, Addr: fmt.Sprintf("198.51.100.%d", 4*n+1), LocalAddr: fmt.Sprintf("198.51.100.%d", 4*n+2)}
	out, in := "epxo"+id, "epxi"+id
	ip := func(args ...string) {
		t.Helper()
		if b, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, b)
		}
	}
	ip("netns", "add", h.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", h.ns).Run() })
	ip("link", "add", out, "type", "veth", "peer", "name", in)
	t.Cleanup(func() { exec.Command("ip", "link", "delete", out).Run() })
	ip("link", "set", in, "netns", h.ns)
	ip("addr", "add", h.LocalAddr+"/30", "dev", out)
	ip("link", "set", out, "up")
	ip("-n", h.ns, "addr", "add", h.Addr+"/30", "dev", in)
	ip("-n", h.ns, "link", "set", in, "up")
	ip("-n", h.ns, "link", "set", "lo", "up")
	return h
}

// curl runs curl on the test host and returns the HTTP status it got.
func (h *testHost) curl(t *testing.T, method, url string, body []byte) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"netns", "exec", h.ns, "curl", "--silent", "--output", "/dev/null", "--write-out", "%{http_code}", "-X", method}
	if body != nil {
		args = append(args, "--data-binary", "@-")
	}
	cmd := exec.CommandContext(ctx, "ip", append(args, url)...)
	cmd.Stdin = strings.NewReader(string(body))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl from %s: %v (%s)", h.Addr, err, out)
	}
	var code int
	fmt.Sscanf(string(out), "%d", &code)
	return code
}

// TestPublicCaller: with the default flags a caller at a public address
// (a test host) is refused every extension endpoint with 403, while
// loopback is served; the health, readiness and metrics endpoints stay open
// to it. With -allowed-sources=any both are served.
func TestPublicCaller(t *testing.T) {
	requireRoot(t)
	parallel(t)
	e := env(t)
	h := newTestHost(t)
	tests := []struct {
		name       string
		args       []string
		wantPublic int
	}{
		{"default flags", nil, http.StatusForbidden},
		{"-allowed-sources=any", []string{"-allowed-sources=any"}, http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			port, err := FreePort()
			if err != nil {
				t.Fatal(err)
			}
			public := fmt.Sprintf("%s:%d", h.LocalAddr, port)
			s := e.startServer(t, serverConfig{args: tc.args, addr: fmt.Sprintf("127.0.0.1:%d,%s", port, public)})
			if err := s.WaitReady(t.Context(), 30*time.Second); err != nil {
				t.Fatal(err)
			}
			host := "mlab1-pub01.mlab-sandbox.measurement-lab.org"
			if got := h.curl(t, "POST", "http://"+public+"/v2/allocate_k8s_token", extensionBody(t, host, "")); got != tc.wantPublic {
				t.Errorf("token from public %s = %d, want %d", h.Addr, got, tc.wantPublic)
			}
			if tc.wantPublic == http.StatusForbidden {
				for _, path := range []string{"/v1/allocate_k8s_token", "/v1/bmc_store_password", "/v1/node/delete"} {
					if got := h.curl(t, "POST", "http://"+public+path, extensionBody(t, host, "p=abc")); got != http.StatusForbidden {
						t.Errorf("POST %s from public %s = %d, want 403", path, h.Addr, got)
					}
				}
				if !strings.Contains(s.Log(), `"remote":"`+h.Addr+`:`) || !strings.Contains(s.Log(), `"reason":"source"`) {
					t.Errorf("the refusal is not logged with the caller's address:\n%s", s.Log())
				}
			}
			for _, path := range []string{"/", "/ready", "/metrics"} {
				if got := h.curl(t, "GET", "http://"+public+path, nil); got != http.StatusOK {
					t.Errorf("GET %s from public %s = %d, want 200", path, h.Addr, got)
				}
			}
			got := post(t, s, "/v2/allocate_k8s_token", extensionBody(t, "mlab2-pub01.mlab-sandbox.measurement-lab.org", ""))
			if got.status != http.StatusOK {
				t.Errorf("token from loopback = %d, want 200", got.status)
			}
		})
	}
}
