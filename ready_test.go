package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestCachedCheck(t *testing.T) {
	errDown := errors.New("down")
	tests := []struct {
		name     string
		maxAge   time.Duration
		results  []error // what the check returns on each run
		calls    int     // how often Err is called
		wantRuns int
		wantErr  error
	}{
		{"first call runs the check", time.Hour, []error{nil}, 1, 1, nil},
		{"fresh result is reused", time.Hour, []error{errDown, nil}, 3, 1, errDown},
		{"stale result is refreshed", 0, []error{errDown, nil}, 2, 2, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runs := 0
			c := &cachedCheck{MaxAge: tc.maxAge, Timeout: time.Second, Check: func(ctx context.Context) error {
				if _, ok := ctx.Deadline(); !ok {
					t.Error("check ran without a deadline")
				}
				err := tc.results[runs]
				runs++
				return err
			}}
			var err error
			for range tc.calls {
				err = c.Err()
			}
			if runs != tc.wantRuns || !errors.Is(err, tc.wantErr) {
				t.Errorf("after %d calls: %d runs, Err() = %v; want %d runs, %v", tc.calls, runs, err, tc.wantRuns, tc.wantErr)
			}
		})
	}
}

func TestDrainTurnsReadyOff(t *testing.T) {
	s, _ := testServer(&fakeTokens{}, &fakeNodes{}, &fakeCreds{}, now)
	s.Drain()
	if got := do(t, s, "GET", "/ready", "").StatusCode; got != 503 {
		t.Errorf("GET /ready while draining = %d, want 503", got)
	}
	for _, path := range []string{"/", "/metrics"} {
		if got := do(t, s, "GET", path, "").StatusCode; got != 200 {
			t.Errorf("GET %s while draining = %d, want 200", path, got)
		}
	}
	if got := do(t, s, "POST", "/v2/allocate_k8s_token", body(machine, now, "")).StatusCode; got != 200 {
		t.Errorf("token while draining = %d, want 200: the server still serves", got)
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
