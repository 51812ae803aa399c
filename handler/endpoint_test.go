package handler

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/overload"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

// TestServedLogsBackendTime checks that a served request's log line gives
// the backend's share of its time, so that the server's own share can be
// told apart: at least the backend's delay, and no more than the whole.
func TestServedLogsBackendTime(t *testing.T) {
	const delay = 30 * time.Millisecond
	now := time.Now()
	s, logs := testServer(&fakeTokens{delay: delay}, &fakeNodes{}, &fakeCreds{}, now)
	resp := do(t, s, "POST", "/v2/allocate_k8s_token", body(machine, now, ""))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	var line struct {
		Msg      string  `json:"msg"`
		Duration float64 `json:"duration_seconds"`
		Backend  float64 `json:"backend_seconds"`
	}
	for l := range strings.SplitSeq(logs.String(), "\n") {
		if json.Unmarshal([]byte(l), &line) == nil && line.Msg == "request served" {
			break
		}
	}
	if line.Msg != "request served" {
		t.Fatalf("no request served line in %q", logs.String())
	}
	if line.Backend < delay.Seconds() || line.Backend > line.Duration {
		t.Errorf("backend_seconds = %v, duration_seconds = %v; want backend at least %v and at most the duration",
			line.Backend, line.Duration, delay.Seconds())
	}
}

// goneTokens fails as a backend does when its caller's context ends: with
// an error that wraps the context's and says overload, as a wait for a
// command slot does.
type goneTokens struct{ named }

func (goneTokens) Create(ctx context.Context, _ string) (joincmd.Join, error) {
	<-ctx.Done()
	return joincmd.Join{}, fmt.Errorf("%w: waited for a slot: %w", overload.Err, ctx.Err())
}

// TestClientGone checks that a request whose caller went away is counted as
// client_gone, with status 499: neither a backend failure nor a 503.
func TestClientGone(t *testing.T) {
	s, _ := testServer(goneTokens{}, &fakeNodes{}, &fakeCreds{}, now)
	gone := metrics.Refusals.WithLabelValues(endpointTokenV2, "client_gone")
	busy := metrics.Refusals.WithLabelValues(endpointTokenV2, "busy")
	failures := metrics.BackendFailures.WithLabelValues(fakeName)
	before := []float64{testutil.ToFloat64(gone), testutil.ToFloat64(busy), testutil.ToFloat64(failures)}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := httptest.NewRecorder()
	r := httptest.NewRequestWithContext(ctx, "POST", "/v2/allocate_k8s_token", strings.NewReader(body(machine, now, "")))
	NewMux(s, prometheus.NewRegistry()).ServeHTTP(rec, r)

	if rec.Code != StatusClientClosedRequest {
		t.Errorf("status = %d, want %d", rec.Code, StatusClientClosedRequest)
	}
	after := []float64{testutil.ToFloat64(gone), testutil.ToFloat64(busy), testutil.ToFloat64(failures)}
	for i, want := range []float64{1, 0, 0} {
		if d := after[i] - before[i]; d != want {
			t.Errorf("metric %d changed by %v, want %v (client_gone, busy, backend failures)", i, d, want)
		}
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	const tokenSecret = "0000000000000001"
	for _, tc := range []struct {
		name  string
		creds *fakeCreds
		path  string
		body  string
	}{
		{"bmc-ok", &fakeCreds{}, "/v1/bmc_store_password", body(machine, now, "p="+password)},
		{"bmc-fails", &fakeCreds{err: errFake}, "/v1/bmc_store_password", body(machine, now, "p="+password)},
		{"bmc-refused-host", &fakeCreds{}, "/v1/bmc_store_password", body("mlab1.lga01.measurement-lab.org", now, "p="+password)},
		{"bmc-refused-old", &fakeCreds{}, "/v1/bmc_store_password", body(machine, now.Add(-time.Hour*5), "p="+password)},
		{"bmc-twice", &fakeCreds{}, "/v1/bmc_store_password", body(machine, now, "p="+password+"&p="+password)},
		{"token", &fakeCreds{}, "/v2/allocate_k8s_token", body(machine, now, "p="+password)},
		{"token-v1", &fakeCreds{}, "/v1/allocate_k8s_token", body(machine, now, "p="+password)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := testServer(&fakeTokens{}, &fakeNodes{}, tc.creds, now)
			do(t, s, "POST", tc.path, tc.body)
			out := logs.String()
			if out == "" {
				t.Fatal("nothing logged")
			}
			for _, secret := range []string{password, tokenSecret, "p="} {
				if strings.Contains(out, secret) {
					t.Errorf("log contains %q:\n%s", secret, out)
				}
			}
		})
	}
}

func TestFailuresAreCounted(t *testing.T) {
	s, _ := testServer(&fakeTokens{fail: true}, &fakeNodes{}, &fakeCreds{err: fmt.Errorf("%w: x", hostname.ErrResolve)}, now)
	refusals := metrics.Refusals.WithLabelValues(endpointNode, "hostname")
	tokenFailures := metrics.BackendFailures.WithLabelValues(fakeName)
	dns := metrics.BackendFailures.WithLabelValues("dns")
	before := []float64{testutil.ToFloat64(refusals), testutil.ToFloat64(tokenFailures), testutil.ToFloat64(dns)}
	do(t, s, "POST", "/v1/node/delete", body("--all", now, ""))
	do(t, s, "POST", "/v2/allocate_k8s_token", body(machine, now, ""))
	do(t, s, "POST", "/v1/bmc_store_password", body(machine, now, "p="+password))
	after := []float64{testutil.ToFloat64(refusals), testutil.ToFloat64(tokenFailures), testutil.ToFloat64(dns)}
	for i, name := range []string{"refusals{node_delete,hostname}", "backend_failures{" + fakeName + "}", "backend_failures{dns}"} {
		if after[i]-before[i] != 1 {
			t.Errorf("%s went from %v to %v, want +1", name, before[i], after[i])
		}
	}
}

// noopTokens returns a fixed join at no cost, so a benchmark measures the
// server alone.
type noopTokens struct{ named }

func (noopTokens) Create(context.Context, string) (joincmd.Join, error) {
	return joincmd.Join{APIAddress: "192.0.2.1:6443", Token: "abcdef.0123456789abcdef", CAHash: "sha256:" + strings.Repeat("0", 64)}, nil
}

// BenchmarkTokenRequest is the server's own cost of one v2 token request:
// routing, validation, metrics, logging and the JSON answer, with a no-op
// backend.
func BenchmarkTokenRequest(b *testing.B) {
	s, _ := testServer(noopTokens{}, &fakeNodes{}, &fakeCreds{}, time.Now())
	s.Log = slog.New(slog.NewJSONHandler(io.Discard, nil))
	mux := NewMux(s, prometheus.NewRegistry())
	reqBody := body(machine, time.Now(), "")
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("POST", "/v2/allocate_k8s_token", strings.NewReader(reqBody))
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, r)
		if rec.Code != 200 {
			b.Fatalf("status %d", rec.Code)
		}
	}
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

// deadlines is every backend at once; it records how long each call had
// left before its deadline.
type deadlines struct {
	named
	left []time.Duration
}

func (d *deadlines) record(ctx context.Context) {
	if dl, ok := ctx.Deadline(); ok {
		d.left = append(d.left, time.Until(dl))
	}
}

func (d *deadlines) Create(ctx context.Context, _ string) (joincmd.Join, error) {
	d.record(ctx)
	return joincmd.Join{Token: "abcdef.0123456789abcdef"}, nil
}

func (d *deadlines) Delete(ctx context.Context, _ string, _ netip.Addr) error {
	d.record(ctx)
	return nil
}

func (d *deadlines) Put(ctx context.Context, _ hostname.BMC, _ string) error {
	d.record(ctx)
	return nil
}

func (d *deadlines) Revoke(ctx context.Context, _ string, _ time.Time) (int, error) {
	d.record(ctx)
	return 0, nil
}

// TestBackendDeadline checks that every endpoint's backend calls run
// under the one deadline of -backend-timeout.
func TestBackendDeadline(t *testing.T) {
	for _, path := range []string{"/v1/allocate_k8s_token", "/v2/allocate_k8s_token", "/v1/bmc_store_password", "/v1/node/delete"} {
		t.Run(path, func(t *testing.T) {
			d := &deadlines{}
			s, _ := testServer(d, d, d, now)
			s.Revoker = d
			s.BackendTimeout = 7 * time.Second
			if resp := do(t, s, "POST", path, body(machine, now, "p="+password)); resp.StatusCode != 200 {
				t.Fatalf("POST %s = %d, want 200", path, resp.StatusCode)
			}
			want := 1
			if path == "/v1/node/delete" {
				want = 2 // the delete, then the revocation
			}
			if len(d.left) != want {
				t.Fatalf("%d backend calls with a deadline, want %d", len(d.left), want)
			}
			for _, left := range d.left {
				if left <= 0 || left > s.BackendTimeout {
					t.Errorf("a backend call had %v left, want at most the backend timeout, %v", left, s.BackendTimeout)
				}
			}
		})
	}
}
