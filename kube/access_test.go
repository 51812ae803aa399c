package kube

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
)

func TestCanCreateBootstrapTokens(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		allowed bool
		wantErr bool
	}{
		{name: "allowed", status: http.StatusCreated, allowed: true},
		{name: "not allowed", status: http.StatusCreated, allowed: false, wantErr: true},
		{name: "unauthorized", status: http.StatusUnauthorized, wantErr: true},
		// Busy is not broken: an overloaded API server keeps the replica
		// in its Service, and token requests get 503 meanwhile.
		{name: "overloaded", status: http.StatusTooManyRequests},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got authorizationv1.SelfSubjectAccessReview
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" {
					t.Errorf("got %s %s", r.Method, r.URL.Path)
				}
				b, _ := io.ReadAll(r.Body)
				json.Unmarshal(b, &got)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				answer := got
				answer.Status.Allowed = tc.allowed
				json.NewEncoder(w).Encode(answer)
			}))
			defer srv.Close()
			client, err := corev1client.NewForConfig(&rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			err = CanCreateBootstrapTokens(client.RESTClient())(ctx)
			if (err != nil) != tc.wantErr {
				t.Errorf("check = %v, want error %t", err, tc.wantErr)
			}
			ra := got.Spec.ResourceAttributes
			if ra == nil || ra.Namespace != "kube-system" || ra.Verb != "create" || ra.Resource != "secrets" {
				t.Errorf("review asked about %+v, want create secrets in kube-system", ra)
			}
		})
	}
}

// TestSideClients checks the clients of informers and readiness: their own
// rate limiters, and no per-request timeout on the watch client.
func TestSideClients(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1", Timeout: 10 * time.Second, QPS: 100, Burst: 200}
	w, err := WatchClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := ReadyClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	wr := w.RESTClient().(*rest.RESTClient)
	if wr.Client.Timeout != 0 {
		t.Errorf("watch client timeout = %s, want none", wr.Client.Timeout)
	}
	rr := r.(*rest.RESTClient)
	if rr.Client.Timeout != cfg.Timeout {
		t.Errorf("readiness client timeout = %s, want %s", rr.Client.Timeout, cfg.Timeout)
	}
	if wr.GetRateLimiter() == rr.GetRateLimiter() || wr.GetRateLimiter().QPS() != SideQPS || rr.GetRateLimiter().QPS() != SideQPS {
		t.Errorf("side clients share a rate limiter or do not limit to %d per second", SideQPS)
	}
	if cfg.Timeout != 10*time.Second || cfg.QPS != 100 {
		t.Errorf("the token client's configuration changed: %+v", cfg)
	}
}

func TestFollowCluster(t *testing.T) {
	a := Cluster{APIAddress: "10.0.0.1:6443", CAHash: "sha256:aa"}
	b := Cluster{APIAddress: "10.0.0.1:6443", CAHash: "sha256:bb"}
	var mu sync.Mutex
	current := a
	reads := []error{nil, context.DeadlineExceeded, nil}
	answers := []Cluster{a, {}, b}
	i := 0
	read := func(context.Context) (Cluster, error) {
		mu.Lock()
		defer mu.Unlock()
		k := min(i, len(answers)-1)
		i++
		return answers[k], reads[k]
	}
	load := func() Cluster { mu.Lock(); defer mu.Unlock(); return current }
	store := func(c Cluster) { mu.Lock(); defer mu.Unlock(); current = c }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		FollowCluster(ctx, read, load, store, 10*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for load() != b && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if got := load(); got != b {
		t.Errorf("join details = %+v, want the rotated %+v (a failed read in between keeps the old ones)", got, b)
	}
}
