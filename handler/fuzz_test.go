package handler

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/m-lab/epoxy-extensions/hostname"
)

func FuzzPassword(f *testing.F) {
	for _, s := range []string{"p=abcABC1234567890abcd", "p=", "", "p=a&p=b", "p=%zz", "p=a;b", "p=%00", "x=1&p=" + strings.Repeat("z", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p, err := Password(raw)
		if err != nil {
			if p != "" {
				t.Fatalf("Password(%q) returned %q with error %v", raw, p, err)
			}
			return
		}
		if p == "" || len(p) > maxPasswordLen {
			t.Fatalf("Password(%q) = %q: empty or too long", raw, p)
		}
		for i := 0; i < len(p); i++ {
			if p[i] <= ' ' || p[i] > '~' {
				t.Fatalf("Password(%q) = %q: byte %d not printable", raw, p, i)
			}
		}
	})
}

// FuzzExtensionRequest sends arbitrary bodies to every extension endpoint.
// Properties: no panic; every answer is 200 or an empty-bodied refusal (4xx);
// nothing refused reaches a backend; what reaches one is a valid hostname.
func FuzzExtensionRequest(f *testing.F) {
	recent := time.Now().Add(-time.Minute)
	for _, b := range []string{
		body(machine, recent, "p="+password), body("", recent, ""), body("--all", recent, ""),
		body(machine, recent.Add(-5*time.Hour), ""), body(machine, recent.Add(time.Hour), ""),
		"{}", `{"v1":null}`, "", "[", `{"v1":{"hostname":7}}`, body(machine+"-d9h6", recent, "p=%zz"),
	} {
		for _, path := range []string{"/v1/allocate_k8s_token", "/v2/allocate_k8s_token", "/v1/bmc_store_password", "/v1/node/delete"} {
			f.Add(path, "POST", b)
		}
	}
	f.Add("/v1/node/delete", "GET", "")
	paths := map[string]bool{"/v1/allocate_k8s_token": true, "/v2/allocate_k8s_token": true, "/v1/bmc_store_password": true, "/v1/node/delete": true}
	f.Fuzz(func(t *testing.T, path, method, reqBody string) {
		if !paths[path] || (method != "POST" && method != "GET" && method != "PUT") {
			return
		}
		tokens, nodes, creds := &fakeTokens{}, &fakeNodes{}, &fakeCreds{}
		s, _ := testServer(tokens, nodes, creds, time.Now())
		rec := httptest.NewRecorder()
		r := httptest.NewRequest(method, path, strings.NewReader(reqBody))
		NewMux(s, prometheus.NewRegistry()).ServeHTTP(rec, r)
		resp := rec.Result()
		got, _ := io.ReadAll(resp.Body)
		calls := tokens.calls + len(nodes.names) + len(creds.puts)
		switch {
		case resp.StatusCode == 200:
			if calls != 1 {
				t.Fatalf("200 with %d backend calls, want 1", calls)
			}
		case resp.StatusCode >= 400 && resp.StatusCode < 500:
			if len(got) != 0 {
				t.Fatalf("refusal %d has body %q", resp.StatusCode, got)
			}
			if calls != 0 {
				t.Fatalf("refusal %d reached a backend %d times", resp.StatusCode, calls)
			}
		default:
			t.Fatalf("status %d for %s %s %q", resp.StatusCode, method, path, reqBody)
		}
		for _, n := range nodes.names {
			if !hostname.Valid(n) {
				t.Fatalf("kubectl got invalid name %q", n)
			}
		}
		for _, h := range tokens.issued {
			if h != "" && !hostname.Valid(h) {
				t.Fatalf("kubeadm got invalid host %q", h)
			}
		}
	})
}
