package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestConfig(t *testing.T) {
	_, caPEM := newCA(t, "kubernetes")
	path := writeFile(t, t.TempDir(), "admin.conf", kubeconfig("ctx-k", map[string]string{"k": inline("https://10.0.0.1:6443", caPEM)}))
	tests := []struct {
		name      string
		o         Options
		wantQPS   float32
		wantBurst int
	}{
		{name: "rate", o: Options{Kubeconfig: path, RequestTimeout: 7 * time.Second, QPS: 50, Burst: 100}, wantQPS: 50, wantBurst: 100},
		{name: "burst at least 1", o: Options{Kubeconfig: path, RequestTimeout: time.Second, QPS: 50}, wantQPS: 50, wantBurst: 1},
		{name: "zero QPS keeps client-go's defaults", o: Options{Kubeconfig: path, Burst: 100}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Config(tc.o)
			if err != nil {
				t.Fatalf("Config(%+v) error = %v", tc.o, err)
			}
			for _, c := range []struct {
				field     string
				got, want any
			}{
				{"Host", cfg.Host, "https://10.0.0.1:6443"},
				{"Timeout", cfg.Timeout, tc.o.RequestTimeout},
				{"QPS", cfg.QPS, tc.wantQPS},
				{"Burst", cfg.Burst, tc.wantBurst},
				{"UserAgent", cfg.UserAgent, "epoxy-extensions"},
				{"ContentType", cfg.ContentType, "application/vnd.kubernetes.protobuf"},
				{"AcceptContentTypes", cfg.AcceptContentTypes, "application/vnd.kubernetes.protobuf,application/json"},
				{"BearerToken", cfg.BearerToken, "not-a-real-token"},
				{"CAData is the kubeconfig's", bytes.Equal(cfg.CAData, caPEM), true},
			} {
				if c.got != c.want {
					t.Errorf("Config(%+v).%s = %v, want %v", tc.o, c.field, c.got, c.want)
				}
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	// Not in a pod, whatever runs the test.
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	if _, err := Config(Options{}); !errors.Is(err, ErrNoConfig) {
		t.Errorf("Config(no kubeconfig, not in a pod) error = %v, want ErrNoConfig", err)
	}
	if _, _, err := NewClient(Options{}); !errors.Is(err, ErrNoConfig) {
		t.Errorf("NewClient(no kubeconfig, not in a pod) error = %v, want ErrNoConfig", err)
	}
	missing := filepath.Join(t.TempDir(), "none.conf")
	_, err := Config(Options{Kubeconfig: missing})
	if err == nil || errors.Is(err, ErrNoConfig) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Config(missing kubeconfig) error = %v, want one naming %s", err, missing)
	}
}

// apiServer returns a kubeconfig for a plain-HTTP stand-in API server that
// answers the nth request (from 1) with answer(n).
func apiServer(t *testing.T, answer func(n int64, w http.ResponseWriter, r *http.Request)) string {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer(n.Add(1), w, r)
	}))
	t.Cleanup(srv.Close)
	return kubeconfigFor(t, srv.URL)
}

func kubeconfigFor(t *testing.T, server string) string {
	t.Helper()
	return writeFile(t, t.TempDir(), "kubeconfig", kubeconfig("ctx-k", map[string]string{"k": "    server: " + server + "\n"}))
}

// status answers with a metav1.Status in JSON, as the API server does.
func status(w http.ResponseWriter, code int, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"apiVersion":"v1","kind":"Status","status":"Failure","message":"test","reason":%q,"code":%d}`, reason, code)
}

var testSecret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-abcdef", Namespace: "kube-system"}}

// TestRealClientErrors classifies the errors client-go itself returns for
// what an API server, or the network, may answer.
func TestRealClientErrors(t *testing.T) {
	refusedAddr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return "http://" + ln.Addr().String()
	}()
	answer := func(code int, reason string) string {
		return apiServer(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { status(w, code, reason) })
	}
	tests := []struct {
		name          string
		kubeconfig    string
		wantReason    string
		wantTransient bool
	}{
		{name: "403", kubeconfig: answer(403, "Forbidden"), wantReason: "forbidden"},
		{name: "409", kubeconfig: answer(409, "AlreadyExists"), wantReason: "already_exists"},
		{name: "401", kubeconfig: answer(401, "Unauthorized"), wantReason: "unauthorized"},
		{name: "422", kubeconfig: answer(422, "Invalid"), wantReason: "invalid"},
		{name: "429", kubeconfig: answer(429, "TooManyRequests"), wantReason: "too_many_requests", wantTransient: true},
		{name: "500", kubeconfig: answer(500, "InternalError"), wantReason: "server_error", wantTransient: true},
		{name: "503", kubeconfig: answer(503, "ServiceUnavailable"), wantReason: "server_error", wantTransient: true},
		{name: "504", kubeconfig: answer(504, "Timeout"), wantReason: "timeout", wantTransient: true},
		{name: "502 without a Status", kubeconfig: apiServer(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "bad gateway", http.StatusBadGateway)
		}), wantReason: "server_error", wantTransient: true},
		{name: "connection dropped", kubeconfig: apiServer(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
		}), wantReason: "unreachable", wantTransient: true},
		{name: "connection refused", kubeconfig: kubeconfigFor(t, refusedAddr), wantReason: "unreachable", wantTransient: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := NewClient(Options{Kubeconfig: tc.kubeconfig, RequestTimeout: 5 * time.Second})
			if err != nil {
				t.Fatalf("NewClient() error = %v", err)
			}
			_, err = c.Secrets("kube-system").Create(context.Background(), testSecret, metav1.CreateOptions{})
			if got := Reason(err); got != tc.wantReason {
				t.Errorf("Reason(%v) = %q, want %q", err, got, tc.wantReason)
			}
			if got := Transient(err); got != tc.wantTransient {
				t.Errorf("Transient(%v) = %t, want %t", err, got, tc.wantTransient)
			}
		})
	}
}

// TestCallWithRealClient retries a real create past a 503, sending what
// Config asks for.
func TestCallWithRealClient(t *testing.T) {
	setBackoff(t, time.Millisecond, time.Millisecond)
	var agent, contentType atomic.Value
	kubeconfig := apiServer(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		agent.Store(r.UserAgent())
		contentType.Store(r.Header.Get("Content-Type"))
		if n == 1 {
			status(w, 503, "ServiceUnavailable")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"bootstrap-token-abcdef","namespace":"kube-system"}}`)
	})
	c, _, err := NewClient(Options{Kubeconfig: kubeconfig, RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("NewClient() error = %v", err)
	}
	attempts := 0
	err = Call(context.Background(), "test_real_client", func(ctx context.Context) error {
		attempts++
		_, err := c.Secrets("kube-system").Create(ctx, testSecret, metav1.CreateOptions{})
		return err
	})
	if err != nil || attempts != 2 {
		t.Errorf("Call() = %v after %d attempts, want nil after 2", err, attempts)
	}
	if got, _ := agent.Load().(string); got != UserAgent {
		t.Errorf("User-Agent = %q, want %q", got, UserAgent)
	}
	if got, _ := contentType.Load().(string); got != "application/vnd.kubernetes.protobuf" {
		t.Errorf("Content-Type = %q, want protobuf", got)
	}
}

// TestCallRetriesHungAPIServer points a real client at a server that
// accepts connections and never answers: each request times out after
// RequestTimeout and is tried again until the caller's deadline is near.
func TestCallRetriesHungAPIServer(t *testing.T) {
	setBackoff(t, time.Millisecond, time.Millisecond)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn // held open, unanswered
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				break
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	c, _, err := NewClient(Options{Kubeconfig: kubeconfigFor(t, "http://"+ln.Addr().String()), RequestTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("NewClient() error = %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	attempts := 0
	start := time.Now()
	err = Call(ctx, "test_hung", func(ctx context.Context) error {
		attempts++
		return c.Nodes().Delete(ctx, "mlab1-lga01.mlab-oti.measurement-lab.org", metav1.DeleteOptions{})
	})
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Call() returned after %s, want by the 500ms deadline", elapsed)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Call() error = %v, want a deadline", err)
	}
	if attempts < 3 {
		t.Errorf("Call() made %d attempts of 50ms in 500ms, want the timed-out ones retried", attempts)
	}
}

// TestRateLimiterLeavesTime: a request the rate limiter lets go with less
// than MinRequestTime before its deadline is turned away by the limiter
// (overload, 503), not sent to time out on the way (500).
func TestRateLimiterLeavesTime(t *testing.T) {
	cfg, err := Config(Options{Kubeconfig: kubeconfigFor(t, "https://127.0.0.1:6443"), QPS: 2, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.RateLimiter
	l.Accept() // the burst is spent: the next token comes in 500 ms
	tests := []struct {
		name    string
		timeout time.Duration
		wantErr bool
	}{
		{"granted with 100 ms left", 600 * time.Millisecond, true},
		{"granted with time to spare", 2 * time.Second, false},
	}
	for _, tc := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
		err := l.Wait(ctx)
		cancel()
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: Wait() = %v, want error %v", tc.name, err, tc.wantErr)
		}
	}
}
