package handler

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/m-lab/epoxy/extension"

	"github.com/m-lab/epoxy-extensions/hostname"
)

// Request is an extension request that passed validation.
type Request struct {
	// Host is a valid lowercase DNS name, or empty where the endpoint allows it.
	Host string
	// LastBoot is when the machine last reached stage 1.
	LastBoot time.Time
	// RawQuery is the query string the machine sent to ePoxy. It may hold a
	// secret: never log it.
	RawQuery string
	// Caller is the address the request came from.
	Caller netip.Addr
	// Direct is true when the caller is not a trusted proxy, so it may act
	// only for itself; never when no proxies are named (all are trusted).
	Direct bool
}

// Validator checks extension requests before any backend sees them.
type Validator struct {
	// MaxBootAge is how long after its last boot a machine may still ask.
	MaxBootAge time.Duration
	// MaxClockSkew is how far in the future a last_boot may be.
	MaxClockSkew time.Duration
	// MaxBodyBytes bounds the request body.
	MaxBodyBytes int64
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// Sources, when not empty, are the only networks allowed to call.
	Sources Sources
	// TrustedProxies are the callers that speak for other machines (the
	// ePoxy server); every other caller is Direct. Empty trusts everyone.
	TrustedProxies Sources
}

// DefaultMaxBodyBytes bounds an extension request body. Real ones are about
// 300 bytes.
const DefaultMaxBodyBytes = 16 << 10

// Parse reads and checks r: an allowed source (checked before the body is
// read), POST only, a decodable body with a "v1" part, a
// valid hostname (or none, when hostOptional), and a recent last_boot. The
// Content-Type header is ignored: ePoxy passes on whatever the machine sent.
// Errors wrap one of the Err* refusals.
func (v *Validator) Parse(w http.ResponseWriter, r *http.Request, hostOptional bool) (Request, error) {
	if !v.Sources.Allows(r.RemoteAddr) {
		return Request{}, fmt.Errorf("%w: %s", ErrSource, r.RemoteAddr)
	}
	if r.Method != http.MethodPost {
		return Request{}, fmt.Errorf("%w: %.16q", ErrMethod, r.Method)
	}
	limit := v.MaxBodyBytes
	if limit <= 0 {
		limit = DefaultMaxBodyBytes
	}
	var ext extension.Request
	if err := ext.Decode(http.MaxBytesReader(w, r.Body, limit)); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return Request{}, fmt.Errorf("%w: over %d bytes", ErrBodyTooLarge, limit)
		}
		return Request{}, fmt.Errorf("%w: %w", ErrDecode, err)
	}
	if ext.V1 == nil {
		return Request{}, ErrNoV1
	}
	req := Request{Host: ext.V1.Hostname, LastBoot: ext.V1.LastBoot, RawQuery: ext.V1.RawQuery}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		req.Caller = ap.Addr().Unmap()
	}
	req.Direct = len(v.TrustedProxies) > 0 && !v.TrustedProxies.Allows(r.RemoteAddr)
	if !(hostOptional && req.Host == "") && !hostname.Valid(req.Host) {
		return Request{}, fmt.Errorf("%w: %.80q", ErrHostname, req.Host)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	t := now()
	switch {
	case req.LastBoot.IsZero():
		return Request{}, fmt.Errorf("%w: no last_boot", ErrBootTooOld)
	case req.LastBoot.After(t.Add(v.MaxClockSkew)):
		return Request{}, fmt.Errorf("%w: last_boot %s is after now %s", ErrBootInFuture,
			req.LastBoot.UTC().Format(time.RFC3339), t.UTC().Format(time.RFC3339))
	case t.Sub(req.LastBoot) > v.MaxBootAge:
		return Request{}, fmt.Errorf("%w: last_boot %s", ErrBootTooOld, req.LastBoot.UTC().Format(time.RFC3339))
	}
	return req, nil
}

// maxPasswordLen bounds a BMC password. Stage 1 sends 20 characters.
const maxPasswordLen = 128

// Password returns the BMC password, parameter p of rawQuery. It must be
// given once, non-empty, of printable ASCII without spaces. Errors never
// contain the password.
func Password(rawQuery string) (string, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", fmt.Errorf("%w: raw_query does not parse", ErrPassword)
	}
	ps := q["p"]
	if len(ps) != 1 || ps[0] == "" {
		return "", fmt.Errorf("%w: want one non-empty p, got %d values", ErrPassword, len(ps))
	}
	p := ps[0]
	if len(p) > maxPasswordLen {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrPassword, maxPasswordLen)
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] > '~' {
			return "", fmt.Errorf("%w: byte %d is not printable ASCII", ErrPassword, i)
		}
	}
	return p, nil
}
