package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fullSecret is a Secret with every field either backend could set.
type fullSecret struct {
	Metadata struct {
		Name            string            `json:"name"`
		Namespace       string            `json:"namespace"`
		Labels          map[string]string `json:"labels"`
		Annotations     map[string]string `json:"annotations"`
		OwnerReferences []any             `json:"ownerReferences"`
		Finalizers      []string          `json:"finalizers"`
	} `json:"metadata"`
	Type       string            `json:"type"`
	Immutable  *bool             `json:"immutable"`
	Data       map[string][]byte `json:"data"`
	StringData map[string]string `json:"stringData"`
}

// perToken are the Secret keys that differ from one token to the next.
var perToken = []string{"token-id", "token-secret", "expiration"}

// TestBackendsAgree asks the exec and the api backend for a token for the
// same machine: the join details are the same, the two Secrets differ only
// in token id, secret and expiration time, and both tokens authenticate.
func TestBackendsAgree(t *testing.T) {
	parallel(t)
	e := env(t)
	const host = "mlab1-agr01.mlab-sandbox.measurement-lab.org"
	type issued struct {
		join   joinDetails
		id     string
		secret fullSecret
		from   time.Time
		to     time.Time
	}
	got := map[string]issued{}
	for _, backend := range kubeBackends {
		s := e.startServer(t, serverConfig{backend: backend})
		var is issued
		is.from = time.Now()
		r := post(t, s, "/v2/allocate_k8s_token", extensionBody(t, host, ""))
		is.to = time.Now()
		if r.status != http.StatusOK {
			t.Fatalf("%s: status %d, want 200", backend, r.status)
		}
		if err := json.Unmarshal(r.body, &is.join); err != nil {
			t.Fatalf("%s: body %q: %v", backend, r.body, err)
		}
		m := tokenRE.FindStringSubmatch(is.join.Token)
		if m == nil {
			t.Fatalf("%s: token %q, want ID.SECRET", backend, is.join.Token)
		}
		is.id = m[1]
		apiGet(t, e, "/api/v1/namespaces/kube-system/secrets/bootstrap-token-"+is.id, &is.secret)
		checkAuthenticates(t, e, is.join.Token, is.id)
		got[backend] = is
	}

	ex, api := got["exec"], got["api"]
	if ex.join.APIAddress != api.join.APIAddress || ex.join.CAHash != api.join.CAHash {
		t.Errorf("join details differ: exec %s %s, api %s %s",
			ex.join.APIAddress, ex.join.CAHash, api.join.APIAddress, api.join.CAHash)
	}
	for backend, is := range got {
		if want := "bootstrap-token-" + is.id; is.secret.Metadata.Name != want {
			t.Errorf("%s: Secret name %q, want %q", backend, is.secret.Metadata.Name, want)
		}
		if got := string(is.secret.Data["token-id"]); got != is.id {
			t.Errorf("%s: token-id %q, want the token's id %q", backend, got, is.id)
		}
		checkExpiration(t, string(is.secret.Data["expiration"]), is.from.Add(5*time.Minute), is.to.Add(5*time.Minute))
	}

	// Everything else must be equal: compare with the per-token keys removed.
	strip := func(s fullSecret) fullSecret {
		s.Metadata.Name = ""
		data := map[string][]byte{}
		for k, v := range s.Data {
			if !slices.Contains(perToken, k) {
				data[k] = v
			}
		}
		s.Data = data
		return s
	}
	if a, b := strip(ex.secret), strip(api.secret); !reflect.DeepEqual(a, b) {
		t.Errorf("Secrets differ beyond token id, secret and expiration:\nexec: %s\napi:  %s", dump(a), dump(b))
	}
	wantKeys := []string{"auth-extra-groups", "description", "expiration", "token-id", "token-secret",
		"usage-bootstrap-authentication", "usage-bootstrap-signing"}
	for backend, is := range got {
		var keys []string
		for k := range is.secret.Data {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, wantKeys) {
			t.Errorf("%s: Secret keys %q, want %q", backend, keys, wantKeys)
		}
	}
}

// joinDetails is the v2 answer.
type joinDetails struct {
	APIAddress string `json:"api_address"`
	Token      string `json:"token"`
	CAHash     string `json:"ca_hash"`
}

// dump shows a Secret without its token secret, for failure messages.
func dump(s fullSecret) string {
	data := map[string]string{}
	for k, v := range s.Data {
		data[k] = string(v)
	}
	delete(data, "token-secret")
	b, _ := json.Marshal(struct {
		Meta any
		Type string
		Data map[string]string
	}{s.Metadata, s.Type, data})
	return string(b)
}

// TestHungAPIServer points the api backend at an address that accepts
// connections and never answers: token and node requests fail within the
// backend timeout, the failures are counted, and the server stays healthy.
func TestHungAPIServer(t *testing.T) {
	waiting(t)
	e := env(t)
	hole := blackHole(t)
	// The admin kubeconfig, aimed at the black hole.
	b, err := os.ReadFile(e.cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "hung.conf")
	if err := os.WriteFile(conf, []byte(strings.ReplaceAll(string(b), e.cp.API.Addr, hole)), 0o600); err != nil {
		t.Fatal(err)
	}
	s := e.startServer(t, serverConfig{backend: "api", args: []string{
		"-kubeconfig", conf, // the later flag wins
		"-backend-timeout", faultTimeout.String(),
	}})
	const host = "mlab1-hng03.mlab-sandbox.measurement-lab.org"
	for _, path := range []string{"/v2/allocate_k8s_token", "/v1/node/delete"} {
		t.Run(path, func(t *testing.T) {
			checkFailedInTime(t, post(t, s, path, extensionBody(t, host, "")))
			checkHealthy(t, s)
		})
	}
	metrics := string(do(t, http.MethodGet, s.URL+"/metrics", nil).body)
	for _, want := range []string{
		`epoxy_extensions_kube_api_errors_total{operation="create_secret"`,
		`epoxy_extensions_kube_api_errors_total{operation="delete_node"`,
		`epoxy_extensions_backend_failures_total{backend="kube_api"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
}

// blackHole listens on a loopback port, accepts every connection and never
// writes a byte, like an API server that hangs. It returns "127.0.0.1:PORT".
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}
