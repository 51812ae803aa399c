package handler

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var now = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

// body returns an extension request body.
func body(host string, lastBoot time.Time, rawQuery string) string {
	return `{"v1":{"hostname":"` + host + `","ipv4_address":"192.0.2.10","ipv6_address":"","last_boot":"` +
		lastBoot.Format(time.RFC3339Nano) + `","raw_query":"` + rawQuery + `"}}`
}

func TestValidatorParse(t *testing.T) {
	const host = "mlab1-lga01.mlab-oti.measurement-lab.org"
	recent := now.Add(-10 * time.Minute)
	tests := []struct {
		name         string
		method       string
		body         string
		contentType  string
		hostOptional bool
		wantErr      error
		wantHost     string
	}{
		{name: "ok", body: body(host, recent, "p=x"), wantHost: host},
		{name: "ok-form-content-type", body: body(host, recent, ""), contentType: "application/x-www-form-urlencoded", wantHost: host},
		{name: "ok-instance-group-name", body: body(host+"-d9h6", recent, ""), wantHost: host + "-d9h6"},
		{name: "ok-unknown-fields", body: `{"v1":{"hostname":"` + host + `","last_boot":"` + recent.Format(time.RFC3339) + `","extra":1},"v2":{}}`, wantHost: host},
		{name: "ok-boot-just-inside-age", body: body(host, now.Add(-120*time.Minute), ""), wantHost: host},
		{name: "ok-boot-within-skew", body: body(host, now.Add(4*time.Minute), ""), wantHost: host},
		{name: "ok-empty-host-when-optional", body: body("", recent, ""), hostOptional: true},
		{name: "get", method: http.MethodGet, body: body(host, recent, ""), wantErr: ErrMethod},
		{name: "put", method: http.MethodPut, body: body(host, recent, ""), wantErr: ErrMethod},
		{name: "empty-body", body: "", wantErr: ErrDecode},
		{name: "not-json", body: "p=abc", wantErr: ErrDecode},
		{name: "json-array", body: "[]", wantErr: ErrDecode},
		{name: "trailing-garbage", body: body(host, recent, "") + "x", wantErr: ErrDecode},
		{name: "hostname-not-string", body: `{"v1":{"hostname":7}}`, wantErr: ErrDecode},
		{name: "bad-time", body: `{"v1":{"hostname":"a","last_boot":"yesterday"}}`, wantErr: ErrDecode},
		{name: "empty-object", body: "{}", wantErr: ErrNoV1},
		{name: "null-v1", body: `{"v1":null}`, wantErr: ErrNoV1},
		{name: "too-large", body: `{"v1":{"hostname":"` + strings.Repeat("a", DefaultMaxBodyBytes) + `"}}`, wantErr: ErrBodyTooLarge},
		{name: "empty-host", body: body("", recent, ""), wantErr: ErrHostname},
		{name: "flag-host", body: body("--all", recent, ""), hostOptional: true, wantErr: ErrHostname},
		{name: "no-last-boot", body: `{"v1":{"hostname":"` + host + `"}}`, wantErr: ErrBootTooOld},
		{name: "boot-too-old", body: body(host, now.Add(-121*time.Minute), ""), wantErr: ErrBootTooOld},
		{name: "boot-in-future", body: body(host, now.Add(6*time.Minute), ""), wantErr: ErrBootInFuture},
	}
	v := &Validator{MaxBootAge: 120 * time.Minute, MaxClockSkew: 5 * time.Minute, Now: func() time.Time { return now }}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			r := httptest.NewRequest(method, "/v1/node/delete", strings.NewReader(tc.body))
			if tc.contentType != "" {
				r.Header.Set("Content-Type", tc.contentType)
			}
			got, err := v.Parse(httptest.NewRecorder(), r, tc.hostOptional)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Parse() error = %v, want %v", err, tc.wantErr)
			}
			if err == nil && got.Host != tc.wantHost {
				t.Errorf("Parse() host = %q, want %q", got.Host, tc.wantHost)
			}
		})
	}
}

func TestPassword(t *testing.T) {
	const secret = "abcABC1234567890abcd"
	tests := []struct {
		name    string
		raw     string
		want    string
		wantErr bool
	}{
		{name: "stage1", raw: "p=" + secret, want: secret},
		{name: "with-other-params", raw: "a=1&p=" + secret + "&z=2", want: secret},
		{name: "escaped-punctuation", raw: "p=a%21b%23", want: "a!b#"},
		{name: "missing", raw: "q=" + secret, wantErr: true},
		{name: "empty-query", raw: "", wantErr: true},
		{name: "empty", raw: "p=", wantErr: true},
		{name: "twice", raw: "p=" + secret + "&p=other", wantErr: true},
		{name: "bad-escape", raw: "p=" + secret + "%zz", wantErr: true},
		{name: "semicolon", raw: "p=" + secret + ";x=1", wantErr: true},
		{name: "space", raw: "p=a+b", wantErr: true},
		{name: "control", raw: "p=a%0Ab", wantErr: true},
		{name: "non-ascii", raw: "p=%C3%A4", wantErr: true},
		{name: "too-long", raw: "p=" + strings.Repeat("a", 129), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Password(tc.raw)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("Password(%q) = %q, %v; want %q, error %v", tc.raw, got, err, tc.want, tc.wantErr)
			}
			if err != nil {
				if !errors.Is(err, ErrPassword) {
					t.Errorf("Password(%q) error %v does not wrap ErrPassword", tc.raw, err)
				}
				if strings.Contains(err.Error(), secret) {
					t.Errorf("Password(%q) error %q contains the password", tc.raw, err)
				}
			}
		})
	}
}

func TestSourceRefusedBeforeBodyRead(t *testing.T) {
	tokens := &fakeTokens{}
	s, _ := testServer(tokens, &fakeNodes{}, &fakeCreds{}, now)
	s.Validator.Sources, _ = ParseSources("10.0.0.0/8")
	r := httptest.NewRequest("POST", "/v2/allocate_k8s_token", failingReader{t})
	r.RemoteAddr = "203.0.113.9:4444"
	rec := httptest.NewRecorder()
	NewMux(s, prometheus.NewRegistry()).ServeHTTP(rec, r)
	if rec.Code != http.StatusForbidden || rec.Body.Len() != 0 {
		t.Errorf("got %d %q, want 403 and an empty body", rec.Code, rec.Body)
	}
	if tokens.calls != 0 {
		t.Errorf("kubeadm called %d times for a refused source", tokens.calls)
	}
}

// failingReader fails the test if the body is read.
type failingReader struct{ t *testing.T }

func (f failingReader) Read([]byte) (int, error) {
	f.t.Error("body read for a refused source")
	return 0, io.EOF
}

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
