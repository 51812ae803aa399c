package identity_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/identity"
	"github.com/m-lab/epoxy-extensions/identity/identitytest"
)

const (
	audience = "http://epoxy-extension-server.mlab-sandbox:8800"
	project  = "mlab-sandbox"
	name     = "mlab1-chs0t"
)

func TestVerify(t *testing.T) {
	ks := identitytest.NewKeyServer(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	v, err := identity.NewVerifier(context.Background(), audience, []string{"mlab-oti", project}, ks.Client())
	if err != nil {
		t.Fatal(err)
	}
	soon := time.Now().Add(time.Hour)
	good := identitytest.Sign(t, ks.Key, ks.KeyID, "RS256", identitytest.Claims(audience, project, name, soon))
	wrongIssuer := identitytest.Claims(audience, project, name, soon)
	wrongIssuer["iss"] = "https://evil.example"
	noInstance := identitytest.Claims(audience, project, name, soon)
	delete(noInstance, "google")
	tests := []struct {
		name   string
		header string
		host   string
		want   string // reason; empty for success
	}{
		{"right name", "Bearer " + good, name, ""},
		{"its FQDN", "Bearer " + good, name + ".mlab-sandbox.measurement-lab.org", ""},
		{"no hostname (control-plane VM)", "Bearer " + good, "", ""},
		{"scheme in lower case", "bearer " + good, name, ""},
		{"wrong name", "Bearer " + good, "mlab2-chs0t", identity.ReasonInvalid},
		{"a name it prefixes", "Bearer " + good, name + "x.mlab-sandbox.measurement-lab.org", identity.ReasonInvalid},
		{"wrong audience", "Bearer " + identitytest.Sign(t, ks.Key, ks.KeyID, "RS256", identitytest.Claims("http://other:8800", project, name, soon)), name, identity.ReasonInvalid},
		{"wrong project", "Bearer " + identitytest.Sign(t, ks.Key, ks.KeyID, "RS256", identitytest.Claims(audience, "someone-else", name, soon)), name, identity.ReasonInvalid},
		{"expired", "Bearer " + identitytest.Sign(t, ks.Key, ks.KeyID, "RS256", identitytest.Claims(audience, project, name, time.Now().Add(-time.Minute))), name, identity.ReasonInvalid},
		{"bad signature", "Bearer " + identitytest.Sign(t, other, ks.KeyID, "RS256", identitytest.Claims(audience, project, name, soon)), name, identity.ReasonInvalid},
		{"unknown key", "Bearer " + identitytest.Sign(t, ks.Key, "nope", "RS256", identitytest.Claims(audience, project, name, soon)), name, identity.ReasonInvalid},
		{"another algorithm", "Bearer " + identitytest.Sign(t, ks.Key, ks.KeyID, "ES256", identitytest.Claims(audience, project, name, soon)), name, identity.ReasonInvalid},
		{"wrong issuer", "Bearer " + identitytest.Sign(t, ks.Key, ks.KeyID, "RS256", wrongIssuer), name, identity.ReasonInvalid},
		{"no compute_engine claims", "Bearer " + identitytest.Sign(t, ks.Key, ks.KeyID, "RS256", noInstance), name, identity.ReasonInvalid},
		{"payload swapped", "Bearer " + swapPayload(good, identitytest.Claims(audience, project, "mlab2-chs0t", soon)), "mlab2-chs0t", identity.ReasonInvalid},
		{"garbage", "Bearer abc", name, identity.ReasonInvalid},
		{"none", "", name, identity.ReasonMissing},
		{"Basic", "Basic dXNlcjpwYXNz", name, identity.ReasonMissing},
		{"Bearer alone", "Bearer ", name, identity.ReasonMissing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Verify(context.Background(), tc.header, tc.host)
			var e *identity.Error
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Verify() = %v, want nil", err)
			case tc.want != "" && (!errors.As(err, &e) || e.RefusalReason() != tc.want):
				t.Fatalf("Verify() = %v, want reason %s", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), strings.TrimPrefix(tc.header, "Bearer ")) && len(tc.header) > 20 {
				t.Errorf("Verify() error %q quotes the token", err)
			}
		})
	}
	if n := ks.Requests.Load(); n != 1 {
		t.Errorf("the key endpoint was asked %d times, want once: keys are cached", n)
	}
}

// swapPayload replaces the payload of a signed JWT, keeping its signature.
func swapPayload(tok string, c map[string]any) string {
	parts := strings.Split(tok, ".")
	b, _ := json.Marshal(c)
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(b) + "." + parts[2]
}

// TestKeyEndpointDown: keys that cannot be fetched are no caller's fault:
// identity_unavailable (503), not invalid; keys fetched before stay cached.
func TestKeyEndpointDown(t *testing.T) {
	ks := identitytest.NewKeyServer(t)
	good := identitytest.Sign(t, ks.Key, ks.KeyID, "RS256", identitytest.Claims(audience, project, name, time.Now().Add(time.Hour)))
	tests := []struct {
		name string
		stop func()
	}{
		{"answers 503", func() { ks.Down.Store(true) }},
		{"unreachable", ks.Server.Close},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := identity.NewVerifier(context.Background(), audience, []string{project}, ks.Client())
			if err != nil {
				t.Fatal(err)
			}
			tc.stop()
			err = v.Verify(context.Background(), "Bearer "+good, name)
			var e *identity.Error
			if !errors.As(err, &e) || e.Reason != identity.ReasonUnavailable {
				t.Errorf("Verify() with the key endpoint down = %v, want %s", err, identity.ReasonUnavailable)
			}
		})
	}
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		header, want, reason string
	}{
		{"Bearer abc.def.ghi", "abc.def.ghi", ""},
		{"BEARER   abc.def.ghi=", "abc.def.ghi=", ""},
		{"", "", identity.ReasonMissing},
		{"Bearer", "", identity.ReasonMissing},
		{"Token abc", "", identity.ReasonMissing},
		{"Bearer abc def", "", identity.ReasonInvalid},
		{"Bearer abc\x00", "", identity.ReasonInvalid},
		{"Bearer " + strings.Repeat("a", identity.MaxHeader), "", identity.ReasonInvalid},
	}
	for _, tc := range tests {
		got, err := identity.BearerToken(tc.header)
		var e *identity.Error
		if got != tc.want || (tc.reason == "") != (err == nil) || (err != nil && (!errors.As(err, &e) || e.Reason != tc.reason)) {
			t.Errorf("identity.BearerToken(%.40q) = %q, %v; want %q, reason %q", tc.header, got, err, tc.want, tc.reason)
		}
	}
}

// FuzzBearerToken: any header gives a token68 word that the header holds,
// or an error that does not quote it; never a panic.
func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer a.b.c", "bearer  x==", "Basic abc", "", "Bearer \x00", "Bearer a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		tok, err := identity.BearerToken(header)
		if err != nil {
			if len(header) > 16 && strings.Contains(err.Error(), header) {
				t.Errorf("error %q quotes the header", err)
			}
			return
		}
		if tok == "" || !strings.HasSuffix(header, tok) || strings.ContainsAny(tok, " \t\r\n") || len(tok) > identity.MaxHeader {
			t.Errorf("identity.BearerToken(%q) = %q", header, tok)
		}
	})
}
