package handler

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
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
