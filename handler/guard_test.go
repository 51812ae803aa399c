package handler

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/token"
)

func TestSources(t *testing.T) {
	s, err := ParseSources(" 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,")
	if err != nil {
		t.Fatalf("ParseSources() error = %v", err)
	}
	tests := []struct {
		remote string
		want   bool
	}{
		{"10.1.2.3:5000", true},
		{"192.0.2.7:80", true},
		{"192.0.2.8:80", false},
		{"[::ffff:10.9.9.9]:1", true},
		{"[2001:db8::1]:443", true},
		{"[2001:db9::1]:443", false},
		{"127.0.0.1:1", false},
		{"garbage", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := s.Allows(tc.remote); got != tc.want {
			t.Errorf("Allows(%q) = %v, want %v", tc.remote, got, tc.want)
		}
	}
	if !(Sources{}).Allows("garbage") {
		t.Error("empty Sources refused a caller, want everyone allowed")
	}
	for _, bad := range []string{"10.0.0.0/33", "example.org", "10.0.0.1/8/1"} {
		if _, err := ParseSources(bad); err == nil {
			t.Errorf("ParseSources(%q) = nil error, want one", bad)
		}
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

func TestBudget(t *testing.T) {
	clock := now
	b := &Budget{Max: 3, Window: 10 * time.Minute, Now: func() time.Time { return clock }}
	take := func(host string, want bool) {
		t.Helper()
		if got := b.Take(host); got != want {
			t.Errorf("at %s Take(%q) = %v, want %v", clock.Sub(now), host, got, want)
		}
	}
	for range 3 {
		take("a", true)
	}
	take("a", false)
	take("b", true) // budgets are per host
	clock = clock.Add(10*time.Minute + time.Second)
	take("a", true) // the window moved on
	var unlimited *Budget
	if !unlimited.Take("x") || !(&Budget{}).Take("x") {
		t.Error("a nil or zero Budget refused, want no limit")
	}
}

func TestBudgetBoundsHosts(t *testing.T) {
	b := &Budget{Max: 1, Window: time.Hour, Now: func() time.Time { return now }}
	for i := range maxBudgetHosts {
		b.Take(fmt.Sprint(i))
	}
	if b.Take("one-too-many") {
		t.Error("Take for a new host beyond the cap = true, want false")
	}
	if n := len(b.hosts); n > maxBudgetHosts {
		t.Errorf("tracking %d hosts, want at most %d", n, maxBudgetHosts)
	}
}

func TestTokenBudgetRefuses(t *testing.T) {
	tokens := &fakeTokens{}
	s, _ := testServer(tokens, &fakeNodes{}, &fakeCreds{}, now)
	s.Budget = &Budget{Max: 2, Window: time.Minute, Now: func() time.Time { return now }}
	var codes []int
	for range 3 {
		codes = append(codes, do(t, s, "POST", "/v2/allocate_k8s_token", body(machine, now, "")).StatusCode)
	}
	if fmt.Sprint(codes) != "[200 200 429]" || tokens.calls != 2 {
		t.Errorf("codes %v with %d kubeadm calls, want [200 200 429] with 2", codes, tokens.calls)
	}
}

func TestTokenBudgetIgnoresFailures(t *testing.T) {
	tokens := &fakeTokens{fail: true}
	s, _ := testServer(tokens, &fakeNodes{}, &fakeCreds{}, now)
	s.Budget = &Budget{Max: 1, Window: time.Minute, Now: func() time.Time { return now }}
	for range 3 {
		if got := do(t, s, "POST", "/v2/allocate_k8s_token", body(machine, now, "")).StatusCode; got != 500 {
			t.Fatalf("failing kubeadm: status %d, want 500", got)
		}
	}
	tokens.fail = false
	if got := do(t, s, "POST", "/v2/allocate_k8s_token", body(machine, now, "")).StatusCode; got != 200 {
		t.Errorf("after 3 failures with a budget of 1: status %d, want 200", got)
	}
}

// busyTokens fails as a saturated command runner does.
type busyTokens struct{}

func (busyTokens) Create(ctx context.Context, host string) (token.Join, error) {
	return token.Join{}, fmt.Errorf("kubeadm: %w: waited", command.ErrBusy)
}

func TestBusyIs503WithRetryAfter(t *testing.T) {
	s, _ := testServer(busyTokens{}, &fakeNodes{}, &fakeCreds{}, now)
	resp := do(t, s, "POST", "/v2/allocate_k8s_token", body(machine, now, ""))
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != RetryAfter || len(got) != 0 {
		t.Errorf("got %d Retry-After %q body %q, want 503, %q, empty", resp.StatusCode, resp.Header.Get("Retry-After"), got, RetryAfter)
	}
}

func TestReady(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ready func() error
		want  int
	}{
		{"no-check", nil, 200},
		{"ready", func() error { return nil }, 200},
		{"not-ready", func() error { return fmt.Errorf("kubeadm missing") }, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := testServer(&fakeTokens{}, &fakeNodes{}, &fakeCreds{}, now)
			s.Ready = tc.ready
			if got := do(t, s, "GET", "/ready", "").StatusCode; got != tc.want {
				t.Errorf("GET /ready = %d, want %d", got, tc.want)
			}
		})
	}
}
