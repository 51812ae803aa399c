package kube

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
)

// TestCallOverload checks that a call that cannot be made in time because
// of overload is ErrOverloaded, which the handler answers 503: client-go's
// own rate limiter unable to grant a request before the deadline, and an
// API server answering 429 until time runs out.
func TestCallOverload(t *testing.T) {
	tests := []struct {
		name    string
		status  int // the API server's answer
		qps     float32
		timeout time.Duration
	}{
		{name: "client rate limiter", status: http.StatusOK, qps: 0.1, timeout: 500 * time.Millisecond},
		{name: "API server says 429", status: http.StatusTooManyRequests, qps: 1000, timeout: 700 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				if tc.status == http.StatusOK {
					w.Write([]byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}`))
					return
				}
				w.Write([]byte(`{"apiVersion":"v1","kind":"Status","status":"Failure","reason":"TooManyRequests","code":429}`))
			}))
			defer srv.Close()
			client, err := corev1client.NewForConfig(&rest.Config{Host: srv.URL, QPS: tc.qps, Burst: 1,
				ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
			if err != nil {
				t.Fatal(err)
			}
			get := func(ctx context.Context) error {
				_, err := client.Secrets("kube-system").Get(ctx, "x", metav1.GetOptions{})
				return err
			}
			if tc.status == http.StatusOK {
				// Spend the one token of the burst.
				if err := Call(context.Background(), "get_secret", get); err != nil {
					t.Fatalf("first call: %v", err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			err = Call(ctx, "get_secret", get)
			if !errors.Is(err, ErrOverloaded) {
				t.Errorf("Call() error = %v, want ErrOverloaded", err)
			}
			if tc.status == http.StatusTooManyRequests && !apierrors.IsTooManyRequests(err) {
				t.Errorf("Call() error = %v, want the API server's 429 still recognisable", err)
			}
			if d := time.Since(start); d > tc.timeout+time.Second {
				t.Errorf("Call() took %s, want within its %s deadline", d, tc.timeout)
			}
		})
	}
}
