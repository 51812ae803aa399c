package e2e

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// setAddresses sets the status.addresses of Node name, as its kubelet
// reports them.
func setAddresses(t *testing.T, e *testEnv, name string, addrs ...string) {
	t.Helper()
	var node map[string]any
	apiGet(t, e, "/api/v1/nodes/"+name, &node)
	var list []map[string]string
	for _, a := range addrs {
		list = append(list, map[string]string{"type": "InternalIP", "address": a})
	}
	node["status"] = map[string]any{"addresses": list}
	if code, body := apiDo(t, e, http.MethodPut, "/api/v1/nodes/"+name+"/status", node); code != http.StatusOK {
		t.Fatalf("setting the addresses of %s: %d %s", name, code, body)
	}
}

// TestTrustedProxies runs the server with -trusted-proxies naming loopback
// (standing in for the ePoxy server) and calls it directly from a test host
// at 198.51.100.1, as a VM on the VPC calls: the VM deletes its own Node
// (whose InternalIP is its address) and gets 403 for another, and may store
// no BMC password; through the proxy both deletes and the BMC store work.
// Refusals reach no backend: the Nodes stay, nothing is stored.
func TestTrustedProxies(t *testing.T) {
	requireRoot(t)
	parallel(t)
	e := env(t)
	h := newTestHost(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		port, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		public := fmt.Sprintf("%s:%d", h.LocalAddr, port)
		machine := "mlab1-tr" + backend[:1] + "01.mlab-sandbox.measurement-lab.org"
		bmc := "mlab1d-tr" + backend[:1] + "01.mlab-sandbox.measurement-lab.org"
		s := e.startServer(t, serverConfig{
			backend: backend,
			addr:    fmt.Sprintf("127.0.0.1:%d,%s", port, public),
			args:    []string{"-allowed-sources", h.Addr + "/32,127.0.0.0/8", "-trusted-proxies", "127.0.0.1/32"},
			hosts:   map[string]string{bmc: "192.0.2.66"},
		})
		if err := s.WaitReady(t.Context(), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		own := "mlab1-own" + backend[:1] + "1.mlab-sandbox.measurement-lab.org-x1y2"
		other := "mlab1-oth" + backend[:1] + "1.mlab-sandbox.measurement-lab.org-x1y2"
		viaProxy := "mlab1-prx" + backend[:1] + "1.mlab-sandbox.measurement-lab.org-x1y2"
		for _, n := range []string{own, other, viaProxy} {
			createNode(t, e, n)
		}
		setAddresses(t, e, own, h.Addr, "2001:db8::1")
		setAddresses(t, e, other, "198.51.100.9")
		setAddresses(t, e, viaProxy, "198.51.100.10")

		direct := func(path, host, query string) int {
			return h.curl(t, "POST", "http://"+public+path, extensionBody(t, host, query))
		}
		if got := direct("/v1/node/delete", other, ""); got != http.StatusForbidden {
			t.Errorf("direct delete of another's Node = %d, want 403", got)
		}
		if !nodeExists(t, e, other) {
			t.Errorf("another's Node %s was deleted by a direct caller", other)
		}
		if !strings.Contains(s.Log(), `"reason":"not_own_node"`) || !strings.Contains(s.Log(), `"remote":"`+h.Addr+`:`) ||
			!strings.Contains(s.Log(), other) {
			t.Errorf("the refusal is not logged with the caller and the name:\n%s", s.Log())
		}
		// The api backend reads ownership from its Node informer: the own
		// Node's delete costs no read. A second is ample for the watch to
		// bring the addresses set above.
		var getsBefore int
		if backend == "api" {
			time.Sleep(time.Second)
			// The refusal above was confirmed with a read: the count is live.
			if getsBefore = serverCalls(t, s, "get_node"); getsBefore < 1 {
				t.Errorf("get_node calls = %d after a refused delete, want at least 1", getsBefore)
			}
		}
		if got := direct("/v1/node/delete", own, ""); got != http.StatusOK {
			t.Errorf("direct delete of its own Node = %d, want 200", got)
		}
		if backend == "api" {
			if gets := serverCalls(t, s, "get_node") - getsBefore; gets != 0 {
				t.Errorf("the delete of its own Node read it %d times, want 0: the Node informer was not used", gets)
			}
		}
		if nodeExists(t, e, own) {
			t.Errorf("its own Node %s is still there", own)
		}
		password := newPassword(t)
		if got := direct("/v1/bmc_store_password", machine, "p="+password); got != http.StatusForbidden {
			t.Errorf("direct BMC store = %d, want 403", got)
		}
		if _, err := loadCredentials(t, e, bmcProject, bmc); err == nil {
			t.Errorf("a direct caller's BMC password was stored")
		}

		// Through the trusted proxy (loopback), a request may name anyone.
		if got := post(t, s, "/v1/node/delete", extensionBody(t, viaProxy, "")); got.status != http.StatusOK {
			t.Errorf("proxied delete = %d, want 200", got.status)
		}
		if nodeExists(t, e, viaProxy) {
			t.Errorf("Node %s is still there after a proxied delete", viaProxy)
		}
		if got := post(t, s, "/v1/bmc_store_password", extensionBody(t, machine, "p="+password)); got.status != http.StatusOK {
			t.Errorf("proxied BMC store = %d, want 200", got.status)
		}
		checkCredentialsOf(t, e, bmcProject, bmc, "192.0.2.66", password)
		if strings.Contains(s.Log(), password) {
			t.Error("the BMC password is in the server's log")
		}
	})
}

// serverCalls returns how many attempts of the Kubernetes API operation op
// (e.g. "get_node") server s made, from its own
// epoxy_extensions_kube_api_call_duration_seconds_count.
func serverCalls(t *testing.T, s *Server, op string) int {
	t.Helper()
	got := do(t, http.MethodGet, s.URL+"/metrics", nil)
	n := 0
	for line := range strings.Lines(string(got.body)) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "epoxy_extensions_kube_api_call_duration_seconds_count{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		if labelValue(labels, "operation") != op {
			continue
		}
		v, err := strconv.Atoi(value)
		if err != nil {
			t.Fatalf("call count %q: %v", value, err)
		}
		n += v
	}
	return n
}
