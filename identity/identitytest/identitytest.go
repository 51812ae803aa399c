// Package identitytest stands in for Google's side of instance identity in
// tests: a key endpoint serving one RSA key as Google's does, a client whose
// transport sends the verifier's key fetches there (the one thing swapped),
// and instance identity tokens signed with that key.
package identitytest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// KeyServer serves a JWKS with one RSA key, cacheable for 5 minutes, until
// Down is set; it counts the requests it answers.
type KeyServer struct {
	Key      *rsa.PrivateKey
	KeyID    string
	Down     atomic.Bool
	Requests atomic.Int32
	Server   *httptest.Server
}

// NewKeyServer starts a KeyServer, closed at the end of the test.
func NewKeyServer(t testing.TB) *KeyServer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k := &KeyServer{Key: key, KeyID: "test-key-1"}
	k.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.Requests.Add(1)
		if k.Down.Load() {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=300")
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kid": k.KeyID, "kty": "RSA", "alg": "RS256", "use": "sig",
			"n": base64.RawURLEncoding.EncodeToString(key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.E)).Bytes()),
		}}})
	}))
	t.Cleanup(k.Server.Close)
	return k
}

// Client sends every request, whatever its URL, to the key server.
func (k *KeyServer) Client() *http.Client {
	u, _ := url.Parse(k.Server.URL)
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r = r.Clone(r.Context())
		r.URL.Scheme, r.URL.Host, r.Host = u.Scheme, u.Host, u.Host
		return http.DefaultTransport.RoundTrip(r)
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Claims are those of a format=full instance identity token for instance
// inst of project proj, for audience aud, expiring at exp.
func Claims(aud, proj, inst string, exp time.Time) map[string]any {
	return map[string]any{
		"iss": "https://accounts.google.com", "aud": aud, "azp": "1234", "sub": "1234",
		"iat": time.Now().Add(-time.Minute).Unix(), "exp": exp.Unix(),
		"google": map[string]any{"compute_engine": map[string]any{
			"project_id": proj, "project_number": 99, "zone": "us-east1-b",
			"instance_id": "4242", "instance_name": inst,
		}},
	}
}

// Sign returns a JWT of claims c with algorithm alg, signed by key under
// key id kid.
func Sign(t testing.TB, key *rsa.PrivateKey, kid, alg string, c map[string]any) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": alg, "kid": kid, "typ": "JWT"}) + "." + enc(c)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// Token is Sign of Claims with the server's key: a valid token.
func (k *KeyServer) Token(t testing.TB, aud, proj, inst string, exp time.Time) string {
	t.Helper()
	return Sign(t, k.Key, k.KeyID, "RS256", Claims(aud, proj, inst, exp))
}
