package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
