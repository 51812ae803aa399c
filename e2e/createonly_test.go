package e2e

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentTokensOneHost sends 30 requests for one host at the same
// moment to three replicas with -max-tokens-per-host 3: exactly three get a
// token, each the very id and secret the cluster holds, and the other 27 an
// empty 429. Then the same with a proxy in front of the API server that
// answers 429 to every other read of a Secret: requests may fail, but no
// 200 ever carries a token the cluster does not hold, and the host never
// holds more than three. kubeadm, which creates or updates, overwrote the
// Secrets of earlier answers here when its read failed.
func TestConcurrentTokensOneHost(t *testing.T) {
	t.Parallel()
	e := env(t)
	forEachBackend(t, func(t *testing.T, backend string) {
		for _, throttled := range []bool{false, true} {
			name := "direct"
			if throttled {
				name = "reads throttled"
			}
			t.Run(name, func(t *testing.T) {
				parallel(t)
				testConcurrentTokensOneHost(t, e, backend, throttled)
			})
		}
	})
}

func testConcurrentTokensOneHost(t *testing.T, e *testEnv, backend string, throttled bool) {
	host := map[string]string{"exec": "mlab1", "api": "mlab2"}[backend] + "-cre01.mlab-sandbox.measurement-lab.org"
	args := []string{"-max-tokens-per-host", "3", "-token-ttl", "10m", "-backend-timeout", "60s"}
	var refused *atomic.Int64
	if throttled {
		host = strings.Replace(host, "-cre01", "-thr01", 1)
		var kubeconfig string
		kubeconfig, refused = throttlingProxy(t, e)
		args = append(args, "-kubeconfig", kubeconfig)
	}
	cfg := serverConfig{backend: backend, args: args}
	var servers []*Server
	for range 3 {
		servers = append(servers, e.startServer(t, cfg))
	}
	const n = 30
	answers := make([]response, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	body := extensionBody(t, host, "")
	for i := range n {
		wg.Go(func() {
			<-start
			answers[i], errs[i] = send(http.MethodPost, servers[i%3].URL+"/v2/allocate_k8s_token", body)
		})
	}
	close(start)
	wg.Wait()

	statuses := map[int]int{}
	tokens := map[string]bool{}
	for i, got := range answers {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		statuses[got.status]++
		if got.status != http.StatusOK {
			if len(got.body) != 0 {
				t.Errorf("request %d: %d with body %q, want it empty", i, got.status, got.body)
			}
			continue
		}
		var j joinDetails
		if err := json.Unmarshal(got.body, &j); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if tokens[j.Token] {
			t.Errorf("request %d: a token handed out twice", i)
		}
		tokens[j.Token] = true
		id, secret, _ := strings.Cut(j.Token, ".")
		s := bootstrapSecret(t, e, id)
		if string(s.Data["token-secret"]) != secret {
			t.Errorf("request %d: got 200 with token id %s, but the cluster holds another secret for it: overwritten", i, id)
		}
		if got, want := string(s.Data["description"]), description(host); got != want {
			t.Errorf("request %d: token %s has description %q, want %q", i, id, got, want)
		}
		if j.CAHash != e.cp.PKI.CAHash() {
			t.Errorf("request %d: ca_hash %s, want the cluster's %s", i, j.CAHash, e.cp.PKI.CAHash())
		}
	}
	live := liveTokens(t, e, host)
	t.Logf("statuses %v; %d live tokens for the host", statuses, live)
	if throttled {
		t.Logf("the proxy answered 429 to %d reads", refused.Load())
		if refused.Load() == 0 {
			t.Fatal("the proxy throttled no read: the test proved nothing")
		}
		if statuses[http.StatusOK] > 3 || live > 3 {
			t.Errorf("%d tokens handed out, %d live in the cluster: want at most 3 each", statuses[http.StatusOK], live)
		}
		for code := range statuses {
			switch code {
			case http.StatusOK, http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusServiceUnavailable:
			default:
				t.Errorf("%d answers of %d, want only 200, 429, 500 or 503", statuses[code], code)
			}
		}
		return
	}
	if statuses[http.StatusOK] != 3 || statuses[http.StatusTooManyRequests] != n-3 {
		t.Errorf("statuses %v, want exactly 3 × 200 and %d × 429", statuses, n-3)
	}
	if live != 3 {
		t.Errorf("%d live tokens for the host in the cluster, want 3", live)
	}
}

// throttlingProxy starts a TLS proxy in front of the test API server that
// answers 429, without Retry-After (so that clients give up), to every other
// GET of a Secret in kube-system, and forwards everything else as the
// admin. It returns a kubeconfig for the proxy, with the cluster's CA, and
// the count of reads it refused.
func throttlingProxy(t *testing.T, e *testEnv) (string, *atomic.Int64) {
	t.Helper()
	target, err := url.Parse(e.cp.API.URL())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(e.cp.PKI.ServingCertFile, e.cp.PKI.ServingKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	var reads, refused atomic.Int64
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Header.Del("Authorization") // the admin's client certificate speaks instead
		},
		Transport:     e.cp.API.Client(true).Transport,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			t.Logf("proxy: %s %s: %v", r.Method, r.URL.Path, err)
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/kube-system/secrets") &&
			reads.Add(1)%2 == 1 {
			refused.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"throttled by the test","reason":"TooManyRequests","code":429}`)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	// The admin's credentials, which the proxy never asks for: without any,
	// kubectl would prompt for a password.
	b64 := base64.StdEncoding.EncodeToString
	conf := fmt.Sprintf("apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    server: %s\n"+
		"    certificate-authority-data: %s\ncontexts:\n- name: proxy\n  context:\n    cluster: proxy\n    user: admin\n"+
		"users:\n- name: admin\n  user:\n    client-certificate-data: %s\n    client-key-data: %s\ncurrent-context: proxy\n",
		srv.URL, b64(e.cp.PKI.CAPEM), b64(e.cp.PKI.AdminCertPEM), b64(e.cp.PKI.AdminKeyPEM))
	path := filepath.Join(t.TempDir(), "proxy.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, &refused
}

// TestKilledCreateIs503 runs a kubectl whose create stores the Secret and
// then hangs, with the deadline coming from -command-timeout and from
// -backend-timeout: the request gets an empty 503 with Retry-After, the
// hung process is gone, and the host holds no token (the slot was freed,
// at once or by the late checks).
func TestKilledCreateIs503(t *testing.T) {
	parallel(t)
	e := env(t)
	tests := []struct {
		name           string
		host           string
		commandTimeout time.Duration
		backendTimeout time.Duration
	}{
		{"command timeout", "mlab1-kil01.mlab-sandbox.measurement-lab.org", 6 * time.Second, 40 * time.Second},
		{"backend timeout", "mlab1-kil02.mlab-sandbox.measurement-lab.org", 40 * time.Second, 6 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			binDir := t.TempDir()
			// The real kubectl, except that a create, once done, hangs.
			script := fmt.Sprintf(`#!/bin/sh
case " $* " in *" create "*)
	%q "$@" >/dev/null
	sleep 600 &
	echo $! > "$0.child"
	echo $$ > "$0.pid"
	exec sleep 600;;
esac
exec %[1]q "$@"
`, filepath.Join(e.cp.BinDir, "kubectl"))
			if err := os.WriteFile(filepath.Join(binDir, "kubectl"), []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			s := e.startServer(t, serverConfig{binDir: binDir, args: []string{"-max-tokens-per-host", "3",
				"-command-timeout", tc.commandTimeout.String(), "-backend-timeout", tc.backendTimeout.String()}})
			got := post(t, s, "/v2/allocate_k8s_token", extensionBody(t, tc.host, ""))
			deadline := min(tc.commandTimeout, tc.backendTimeout)
			t.Logf("answered %d after %s", got.status, got.elapsed.Round(time.Millisecond))
			if got.status != http.StatusServiceUnavailable || got.retryAfter == "" || len(got.body) != 0 {
				t.Errorf("answer %d, Retry-After %q, body %q: want an empty 503 with Retry-After", got.status, got.retryAfter, got.body)
			}
			if got.elapsed < deadline || got.elapsed > deadline+faultMargin {
				t.Errorf("answered after %s, want between the %s deadline and %s later", got.elapsed.Round(time.Millisecond), deadline, faultMargin)
			}
			checkHungKilled(t, binDir, "kubectl")
			// The killed create's Secret is deleted before the answer, or,
			// when the cleanup could not finish in its 3 s (a loaded
			// machine), by one of the late checks (5, 20 and 60 s later).
			answered := time.Now()
			for n := liveTokens(t, e, tc.host); n != 0; n = liveTokens(t, e, tc.host) {
				if time.Since(answered) > 100*time.Second {
					t.Fatalf("%d live tokens for %s after the killed create and every late check, want 0: a slot is held by a token nobody got", n, tc.host)
				}
				time.Sleep(time.Second)
			}
			t.Logf("no token held %s after the answer", time.Since(answered).Round(time.Second))
		})
	}
}
