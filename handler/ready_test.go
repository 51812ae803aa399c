package handler

import (
	"fmt"
	"testing"
)

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
