package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/m-lab/epoxy/extension"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/m-lab/epoxy-extensions/handler"
	"github.com/m-lab/epoxy-extensions/identity"
	"github.com/m-lab/epoxy-extensions/identity/identitytest"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

// countingTokens issues a fixed token and counts its calls.
type countingTokens struct{ calls int }

func (*countingTokens) Name() string { return "kubectl" }

func (c *countingTokens) Create(context.Context, string) (joincmd.Join, error) {
	c.calls++
	return joincmd.Join{APIAddress: "192.0.2.1:6443", Token: "abcdef.0123456789abcdef", CAHash: "sha256:" + strings.Repeat("0", 64)}, nil
}

// TestInstanceIdentity puts the real identity check (google.golang.org/api
// idtoken, with only the key URL's transport swapped for a local key
// endpoint) behind the handler, as main does, and asks for tokens as a
// direct caller (loopback is no trusted proxy here): a valid token for its
// own name is served; anything else is 401, or 503 with the key endpoint
// down, never reaches the token backend, and never logs the token.
func TestInstanceIdentity(t *testing.T) {
	const aud, project, inst = "http://epoxy-extension-server:8800", "mlab-sandbox", "mlab1-chs0t"
	const host = inst + ".mlab-sandbox.measurement-lab.org"
	ks := identitytest.NewKeyServer(t)
	v, err := identity.NewVerifier(context.Background(), aud, []string{project}, ks.Client())
	if err != nil {
		t.Fatal(err)
	}
	soon := time.Now().Add(time.Hour)
	valid := ks.Token(t, aud, project, inst, soon)
	tests := []struct {
		name, authorization, host string
		keysDown                  bool
		want                      int
	}{
		{"valid, its own name", "Bearer " + valid, host, false, 200},
		{"valid, another name", "Bearer " + valid, "mlab2-chs0t.mlab-sandbox.measurement-lab.org", false, 401},
		{"wrong audience", "Bearer " + ks.Token(t, "http://elsewhere", project, inst, soon), host, false, 401},
		{"wrong project", "Bearer " + ks.Token(t, aud, "not-mlab", inst, soon), host, false, 401},
		{"expired", "Bearer " + ks.Token(t, aud, project, inst, time.Now().Add(-time.Second)), host, false, 401},
		{"none", "", host, false, 401},
		{"keys down", "Bearer " + ks.Token(t, aud, project, inst, soon), host, true, 503},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.keysDown {
				// A verifier of its own, with nothing cached yet.
				v, err = identity.NewVerifier(context.Background(), aud, []string{project}, ks.Client())
				if err != nil {
					t.Fatal(err)
				}
				ks.Down.Store(true)
				defer ks.Down.Store(false)
			}
			var logs bytes.Buffer
			tokens := &countingTokens{}
			proxies, _ := handler.ParseSources("10.0.0.5")
			s := &handler.Server{
				Tokens: tokens, Nodes: okNodes{}, Creds: okCreds{}, Identity: v,
				Validator:      handler.Validator{MaxBootAge: 2 * time.Hour, MaxClockSkew: 5 * time.Minute, TrustedProxies: proxies},
				BackendTimeout: 5 * time.Second,
				Log:            slog.New(slog.NewJSONHandler(&logs, nil)),
			}
			srv := httptest.NewServer(handler.NewMux(s, prometheus.NewRegistry()))
			defer srv.Close()
			body, _ := json.Marshal(extension.Request{V1: &extension.V1{Hostname: tc.host, LastBoot: time.Now().Add(-time.Minute)}})
			req, _ := http.NewRequest("POST", srv.URL+"/v2/allocate_k8s_token", bytes.NewReader(body))
			if tc.authorization != "" {
				req.Header.Set("Authorization", tc.authorization)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want || (tc.want != 200 && len(b) != 0) {
				t.Errorf("status %d, body %q; want %d", resp.StatusCode, b, tc.want)
			}
			if reached := tokens.calls > 0; reached != (tc.want == 200) {
				t.Errorf("token backend reached: %v, want %v", reached, tc.want == 200)
			}
			if tok := strings.TrimPrefix(tc.authorization, "Bearer "); tok != "" && strings.Contains(logs.String(), tok[strings.LastIndex(tok, ".")+1:]) {
				t.Errorf("the log holds the identity token:\n%s", logs.String())
			}
		})
	}
}
