// Package identity checks that a cloud VM calling the server directly is who
// it says it is: a Google Compute Engine instance identity token (the JWT
// the metadata server issues with format=full, sent as "Authorization:
// Bearer …") must be signed by Google, for this server's audience, unexpired,
// issued by accounts.google.com, for an instance of an allowed project, and
// that instance must be entitled to the hostname it asks a token for.
// Signatures are checked by google.golang.org/api/idtoken, which fetches
// Google's keys and caches them as their Cache-Control says.
package identity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/api/idtoken"
	"google.golang.org/api/option"
)

// Reasons a request is refused, as the handler names them (RefusalReason).
const (
	ReasonMissing     = "identity_missing"
	ReasonInvalid     = "identity_invalid"
	ReasonUnavailable = "identity_unavailable"
)

// Error is a refused identity. It never holds the token.
type Error struct {
	Reason string // one of the Reason constants
	Detail string
}

func (e *Error) Error() string { return e.Reason + ": " + e.Detail }

// RefusalReason names the refusal for the handler, which answers 401 for a
// missing or invalid identity and 503 for one it cannot check now.
func (e *Error) RefusalReason() string { return e.Reason }

func refuse(reason, format string, args ...any) error {
	return &Error{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// Issuers are the issuers Google's ID tokens carry.
var Issuers = []string{"https://accounts.google.com", "accounts.google.com"}

// MaxHeader bounds the Authorization header read: a GCE identity token with
// format=full is about 1 KB.
const MaxHeader = 8 << 10

// BearerToken returns the token of an "Authorization: Bearer TOKEN" header:
// the scheme in any case, one or more spaces, then one token68 word
// (RFC 7235) of at most 8 KiB. Errors never quote the header.
func BearerToken(header string) (string, error) {
	if header == "" {
		return "", refuse(ReasonMissing, "no Authorization header")
	}
	if len(header) > MaxHeader {
		return "", refuse(ReasonInvalid, "Authorization header over %d bytes", MaxHeader)
	}
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", refuse(ReasonMissing, "Authorization is not a Bearer token")
	}
	tok = strings.TrimLeft(tok, " ")
	if tok == "" {
		return "", refuse(ReasonMissing, "empty Bearer token")
	}
	body := strings.TrimRight(tok, "=")
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0) {
			return "", refuse(ReasonInvalid, "Bearer token has a byte outside token68 at %d", i)
		}
	}
	return tok, nil
}

// Instance is a verified Compute Engine instance.
type Instance struct {
	Project, Zone, Name string
}

// Entitled reports whether the instance may ask a token for host: a host
// that is the instance's name, or a DNS name whose first label is it (the
// instance's FQDN); or no host at all, which control-plane VMs send, and
// which joins from the unnamed pool.
func (i Instance) Entitled(host string) bool {
	first, _, _ := strings.Cut(host, ".")
	return host == "" || first == i.Name
}

// Verifier checks instance identity tokens.
type Verifier struct {
	// Audience is the audience the tokens must carry: what VMs ask the
	// metadata server for (e.g. "http://epoxy-extension-server:8800").
	Audience string
	// Projects are the Google Cloud projects whose instances may ask.
	Projects []string

	validator *idtoken.Validator
}

// KeyTimeout bounds fetching Google's signing keys.
const KeyTimeout = 10 * time.Second

// NewVerifier returns a Verifier. client fetches Google's keys; nil means a
// plain client with KeyTimeout. Only its transport matters to tests.
func NewVerifier(ctx context.Context, audience string, projects []string, client *http.Client) (*Verifier, error) {
	if audience == "" || len(projects) == 0 {
		return nil, errors.New("instance identity needs an audience and at least one project")
	}
	if client == nil {
		client = &http.Client{Timeout: KeyTimeout}
	}
	base := client.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c := *client
	c.Transport = failures{base}
	v, err := idtoken.NewValidator(ctx, option.WithHTTPClient(&c))
	if err != nil {
		return nil, fmt.Errorf("instance identity validator: %w", err)
	}
	return &Verifier{Audience: audience, Projects: projects, validator: v}, nil
}

// Verify checks the Authorization header of a request for host and returns
// the instance it proves, or an *Error.
func (v *Verifier) Verify(ctx context.Context, authorization, host string) error {
	_, err := v.Instance(ctx, authorization, host)
	return err
}

// Instance is Verify, also returning the instance.
func (v *Verifier) Instance(ctx context.Context, authorization, host string) (Instance, error) {
	tok, err := BearerToken(authorization)
	if err != nil {
		return Instance{}, err
	}
	// Compute Engine signs with RS256 only; refusing every other algorithm
	// keeps other keys and code paths out of reach.
	if alg, err := algorithm(tok); err != nil || alg != "RS256" {
		return Instance{}, refuse(ReasonInvalid, "not an RS256 JWT (%q, %v)", alg, err)
	}
	var fetchFailed atomic.Bool
	payload, err := v.validator.Validate(context.WithValue(ctx, fetchKey{}, &fetchFailed), tok, v.Audience)
	if err != nil {
		if fetchFailed.Load() {
			return Instance{}, refuse(ReasonUnavailable, "fetching Google's signing keys: %v", err)
		}
		return Instance{}, refuse(ReasonInvalid, "%v", err)
	}
	if !slices.Contains(Issuers, payload.Issuer) {
		return Instance{}, refuse(ReasonInvalid, "issuer %.100q", payload.Issuer)
	}
	inst, err := instance(payload.Claims)
	if err != nil {
		return Instance{}, err
	}
	if !slices.Contains(v.Projects, inst.Project) {
		return Instance{}, refuse(ReasonInvalid, "instance %s of project %.100q, which is not allowed", inst.Name, inst.Project)
	}
	if !inst.Entitled(host) {
		return Instance{}, refuse(ReasonInvalid, "instance %s (project %s) may not ask for host %q", inst.Name, inst.Project, host)
	}
	return inst, nil
}

// instance reads the google.compute_engine claims of a format=full token.
func instance(claims map[string]any) (Instance, error) {
	g, _ := claims["google"].(map[string]any)
	ce, _ := g["compute_engine"].(map[string]any)
	s := func(k string) string { v, _ := ce[k].(string); return v }
	inst := Instance{Project: s("project_id"), Zone: s("zone"), Name: s("instance_name")}
	if inst.Project == "" || inst.Name == "" {
		return Instance{}, refuse(ReasonInvalid, "no compute_engine claims: the VM must ask the metadata server for format=full")
	}
	return inst, nil
}

// fetchKey marks, in a Validate call's context, whether fetching the keys
// failed: the one failure that is not the caller's.
type fetchKey struct{}

// failures records in the request's context a fetch that did not answer 200.
type failures struct{ base http.RoundTripper }

func (f failures) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := f.base.RoundTrip(r)
	if flag, ok := r.Context().Value(fetchKey{}).(*atomic.Bool); ok && (err != nil || resp.StatusCode != http.StatusOK) {
		flag.Store(true)
	}
	return resp, err
}

// algorithm returns the alg of a JWT's header.
func algorithm(tok string) (string, error) {
	head, _, ok := strings.Cut(tok, ".")
	if !ok {
		return "", errors.New("not a JWT")
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(head, "="))
	if err != nil {
		return "", fmt.Errorf("JWT header: %w", err)
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return "", fmt.Errorf("JWT header: %w", err)
	}
	return h.Alg, nil
}
