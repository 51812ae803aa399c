package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/datastore"
	epoxystorage "github.com/m-lab/epoxy/storage"

	"github.com/m-lab/epoxy-extensions/e2e/components"
	"github.com/m-lab/epoxy-extensions/token"
)

// epoxyExtensionIP is where ePoxy's private /etc/hosts puts its extension
// servers; the tests' servers listen there on :8800 and :8801.
const epoxyExtensionIP = "127.0.88.1"

// sharedEPoxy is one ePoxy boot server for the package (it serves its own
// metrics on a fixed port, so only one can run), started at first use.
var sharedEPoxy struct {
	once sync.Once
	ep   *EPoxy
	err  error
}

// epoxyMu is held by the test that uses the shared ePoxy boot server: the
// extension server it talks to listens on fixed ports (epoxyServer).
var epoxyMu sync.Mutex

// epoxyEnv returns the shared environment and ePoxy boot server, which t
// then has to itself until it ends.
func epoxyEnv(t *testing.T) (*testEnv, *EPoxy) {
	t.Helper()
	e, ep := epoxyBootServer(t)
	epoxyMu.Lock()
	t.Cleanup(epoxyMu.Unlock)
	return e, ep
}

// epoxyBootServer returns the shared environment and ePoxy boot server,
// without taking it: enough to register machines, whose names no other test
// uses, but not to start a server where ePoxy sends its extensions.
func epoxyBootServer(t *testing.T) (*testEnv, *EPoxy) {
	t.Helper()
	e := env(t)
	sharedEPoxy.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		dir, err := components.Ensure(ctx, components.EPoxy(components.EPoxyVersion), os.Stderr)
		if err != nil {
			sharedEPoxy.err = err
			return
		}
		sharedEPoxy.ep, sharedEPoxy.err = StartEPoxy(dir, e.emu.Host, bmcProject, epoxyExtensionIP, e.dir)
	})
	if sharedEPoxy.err != nil {
		t.Fatalf("ePoxy boot server: %v", sharedEPoxy.err)
	}
	return e, sharedEPoxy.ep
}

// epoxyServer starts the server where ePoxy v1.2.5 sends its extensions:
// both its ports, one process. bmcs maps BMC names to addresses.
func epoxyServer(t *testing.T, e *testEnv, backend string, bmcs map[string]string, args ...string) *Server {
	t.Helper()
	return e.startServer(t, serverConfig{
		backend: backend,
		addr:    fmt.Sprintf("%s:%d,%s:%d", epoxyExtensionIP, EPoxyTokenPort, epoxyExtensionIP, EPoxyBMCPort),
		hosts:   bmcs,
		args:    args,
	})
}

// register registers the machine with ePoxy, coming from 127.0.0.1.
func register(t *testing.T, ep *EPoxy, m *Machine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ep.Register(ctx, m.Host, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
}

var bareToken = regexp.MustCompile(`^([a-z0-9]{6})\.[a-z0-9]{16}$`)

// checkTokenFor fails unless tok is a bare token whose Secret names host and
// which the API server authenticates.
func checkTokenFor(t *testing.T, e *testEnv, tok, host string) {
	t.Helper()
	m := bareToken.FindStringSubmatch(tok)
	if m == nil {
		t.Fatalf("token answer %q is not a bare token", tok)
	}
	s := bootstrapSecret(t, e, m[1])
	if got, want := string(s.Data["description"]), token.Description(host); got != want {
		t.Errorf("token %s.… is for %q, want %q", m[1], got, want)
	}
	checkAuthenticates(t, e, tok, m[1])
}

// TestEPoxyPhysicalMachine boots a physical machine through ePoxy: its v1
// token and its BMC password, with stage 1's and stage 3's own curl lines.
func TestEPoxyPhysicalMachine(t *testing.T) {
	parallel(t)
	e, ep := epoxyEnv(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		m := NewMachine('p', map[string]int{"exec": 0, "api": 1}[backend], bmcProject)
		register(t, ep, m)
		s := epoxyServer(t, e, backend, map[string]string{m.BMC: "192.0.2.77"})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := m.Stage1(ctx, ep); err != nil {
			t.Fatal(err)
		}
		tok, err := m.Token(ctx)
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		checkTokenFor(t, e, tok, m.Host)

		password := newPassword(t)
		code, err := m.StorePassword(ctx, "?p="+password)
		if err != nil || code != "200" {
			t.Fatalf("BMC store: %q, %v; want 200", code, err)
		}
		checkCredentialsOf(t, e, bmcProject, m.BMC, "192.0.2.77", password)
		if log := s.Log(); strings.Contains(log, password) || strings.Contains(log, tok) {
			t.Error("the server's log holds the password or the token")
		}
		// ePoxy's own access log prints each request line, and with it the
		// password in ?p=…: a leak of ePoxy v1.2.5, not ours. Its log never
		// sees the token, which travels in the answer's body.
		if strings.Contains(ep.Log(), tok) {
			t.Error("ePoxy's log holds the token")
		}
	})
}

// TestEPoxyStaleBoot: a machine whose ePoxy record says it booted 3 hours
// ago gets 408 relayed to its curl, whose error text the stage script reads
// to decide to reboot; no token is made.
func TestEPoxyStaleBoot(t *testing.T) {
	parallel(t)
	_, ep := epoxyEnv(t)
	// A control plane of its own: it counts every token in the cluster.
	e := privateEnv(t, true, false)
	m := NewMachine('s', 0, bmcProject)
	register(t, ep, m)
	epoxyServer(t, e, "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Stage1(ctx, ep); err != nil {
		t.Fatal(err)
	}
	setLastBoot(t, ep, m.Host, time.Now().Add(-3*time.Hour))
	before := len(bootstrapSecrets(t, e))
	out, err := m.Token(ctx)
	status, stderr := CurlStatus(err)
	// curl before 7.76 wrote "…returned error: 408 Request Timeout", later
	// ones "…returned error: 408"; either way, exit status 22 (--fail).
	if status != 22 || !strings.Contains(stderr, "The requested URL returned error: 408") || out != "" {
		t.Errorf("curl = %q, exit %d, stderr %q; want exit 22 and \"returned error: 408\"", out, status, stderr)
	}
	if after := len(bootstrapSecrets(t, e)); after != before {
		t.Errorf("%d bootstrap tokens after the refusal, want %d", after, before)
	}
}

// setLastBoot sets the session time of host's ePoxy record, which ePoxy
// sends as last_boot.
func setLastBoot(t *testing.T, ep *EPoxy, host string, when time.Time) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := datastore.NewClient(ctx, ep.Project)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	cfg := epoxystorage.NewDatastoreConfig(client)
	h, err := cfg.Load(host)
	if err != nil {
		t.Fatalf("loading ePoxy's record of %s: %v", host, err)
	}
	h.LastSessionCreation = when
	if err := cfg.Save(h); err != nil {
		t.Fatalf("saving ePoxy's record of %s: %v", host, err)
	}
}

// TestEPoxyBMCWithoutPassword: a BMC request without p gets 400 relayed,
// and nothing is stored.
func TestEPoxyBMCWithoutPassword(t *testing.T) {
	parallel(t)
	e, ep := epoxyEnv(t)
	m := NewMachine('n', 0, bmcProject)
	register(t, ep, m)
	epoxyServer(t, e, "", map[string]string{m.BMC: "192.0.2.78"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Stage1(ctx, ep); err != nil {
		t.Fatal(err)
	}
	for _, query := range []string{"", "?p=", "?q=abc"} {
		code, err := m.StorePassword(ctx, query)
		status, stderr := CurlStatus(err)
		if status != 22 || !strings.Contains(stderr, "returned error: 400") {
			t.Errorf("query %q: curl wrote %q, exit %d, stderr %q; want exit 22 and error 400", query, code, status, stderr)
		}
	}
	if _, err := loadCredentials(t, e, bmcProject, m.BMC); !errors.Is(err, datastore.ErrNoSuchEntity) {
		t.Errorf("credentials of %s after refusals: %v, want none stored", m.BMC, err)
	}
}

// TestEPoxyServerDown: with the extension server down, ePoxy answers 5xx;
// the next try after the server is back succeeds.
func TestEPoxyServerDown(t *testing.T) {
	parallel(t)
	e, ep := epoxyEnv(t)
	m := NewMachine('d', 0, bmcProject)
	register(t, ep, m)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := m.Stage1(ctx, ep); err != nil {
		t.Fatal(err)
	}
	out, err := m.Token(ctx)
	status, stderr := CurlStatus(err)
	if status != 22 || !regexp.MustCompile(`returned error: 5\d\d`).MatchString(stderr) {
		t.Fatalf("token with the server down: %q, exit %d, stderr %q; want exit 22 and a 5xx", out, status, stderr)
	}
	epoxyServer(t, e, "", nil)
	tok, err := m.Token(ctx)
	if err != nil {
		t.Fatalf("token once the server is back: %v", err)
	}
	checkTokenFor(t, e, tok, m.Host)
}

// TestEPoxyDirectCallers runs the lines of the machines that call the
// server directly: a cloud VM joining (join-cluster.sh), a control-plane VM
// without a hostname (create-control-plane.sh), and a VM leaving
// (leave-cluster.sh), whose name ends in an instance-group suffix.
func TestEPoxyDirectCallers(t *testing.T) {
	parallel(t)
	e, _ := epoxyEnv(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		s := epoxyServer(t, e, backend, nil)
		base := s.URL // http://127.0.88.1:8800
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		now := time.Now().UTC().Format(time.RFC3339Nano)
		vm := "mlab1-lga01.mlab-sandbox.measurement-lab.org-" + backend[:2] + "x1"

		t.Run("cloud VM joins", func(t *testing.T) {
			extensionV1 := `{"v1":{"hostname":"` + vm + `","last_boot":"` + now + `"}}`
			out, err := Curl(ctx, "--data", extensionV1, base+"/v2/allocate_k8s_token")
			if err != nil {
				t.Fatal(err)
			}
			checkJoinJSON(t, e, out, vm)
		})
		t.Run("control-plane VM joins without a hostname", func(t *testing.T) {
			out, err := Curl(ctx, "--data", `{"v1":{"last_boot":"`+now+`"}}`, base+"/v2/allocate_k8s_token")
			if err != nil {
				t.Fatal(err)
			}
			checkJoinJSON(t, e, out, "")
		})
		t.Run("VM leaves", func(t *testing.T) {
			createNode(t, e, vm)
			extensionV1 := `{"v1":{"hostname":"` + vm + `","last_boot":"` + now + `"}}`
			out, err := Curl(ctx, "--data", extensionV1, base+"/v1/node/delete")
			if err != nil || out != "" {
				t.Fatalf("node delete: %q, %v", out, err)
			}
			if status, _ := apiDo(t, e, http.MethodGet, "/api/v1/nodes/"+vm, nil); status != http.StatusNotFound {
				t.Errorf("GET node %s after delete: %d, want 404", vm, status)
			}
		})
	})
}

// checkJoinJSON fails unless out is the v2 answer for host: the API
// address, a token the API server authenticates, and the CA's hash.
func checkJoinJSON(t *testing.T, e *testEnv, out, host string) {
	t.Helper()
	var join struct {
		APIAddress string `json:"api_address"`
		Token      string `json:"token"`
		CAHash     string `json:"ca_hash"`
	}
	if err := json.Unmarshal([]byte(out), &join); err != nil {
		t.Fatalf("answer %q: %v", out, err)
	}
	if join.APIAddress != e.cp.API.Addr || join.CAHash != e.cp.PKI.CAHash() {
		t.Errorf("api_address %q, ca_hash %q; want %q, %q", join.APIAddress, join.CAHash, e.cp.API.Addr, e.cp.PKI.CAHash())
	}
	checkTokenFor(t, e, join.Token, host)
}
