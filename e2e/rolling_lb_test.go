package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRollingRestartBehindLoadBalancer puts three replicas (default exec
// backend) behind a TCP load balancer that never retries a connection
// elsewhere, and restarts them one after the other (SIGTERM, wait for the
// exit, start again, wait until back in rotation) under a steady 5 token
// requests a second from fresh machines for 45 s: every answer is a 200
// with a working token. Two health checks:
//
//   - the HTTP check of /ready that docs/operations.md recommends, GCP's default
//     interval (5 s) and thresholds (2) scaled down ten times, with a
//     -shutdown-delay (3 s) that covers its detection time (about 1 s) with
//     a margin, as the 15 s default covers 10 s; the servers bind their
//     ports themselves, which close at the end of the drain.
//   - M-Lab's TCP check, with socket activation: the port never closes, so
//     the replica never leaves rotation, and connections made during the
//     restart wait in the socket's backlog.
func TestRollingRestartBehindLoadBalancer(t *testing.T) {
	parallel(t)
	e := env(t)
	tests := []struct {
		name      string
		check     HealthCheck
		delay     string // -shutdown-delay
		activated bool
	}{
		{"HTTP /ready check", HealthCheck{Path: "/ready", Interval: 500 * time.Millisecond, Timeout: 2 * time.Second, Healthy: 2, Unhealthy: 2}, "3s", false},
		{"TCP check, socket activation", HealthCheck{Interval: 500 * time.Millisecond, Timeout: 2 * time.Second, Healthy: 2, Unhealthy: 2}, "0s", true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const replicas = 3
			cfgs := make([]serverConfig, replicas)
			addrs := make([]string, replicas)
			servers := make([]*Server, replicas)
			for r := range cfgs {
				cfgs[r].args = []string{"-shutdown-delay", tc.delay}
				if tc.activated {
					cfgs[r].socket = holdSocket(t)
				} else {
					port, err := FreePort()
					if err != nil {
						t.Fatal(err)
					}
					cfgs[r].addr = "127.0.0.1:" + strconv.Itoa(port)
				}
				servers[r] = e.startServer(t, cfgs[r])
				addrs[r] = strings.TrimPrefix(servers[r].URL, "http://")
			}
			lb, err := StartLoadBalancer(tc.check, addrs...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(lb.Close)
			for _, a := range addrs {
				if err := lb.WaitInRotation(a, time.Minute); err != nil {
					t.Fatal(err)
				}
			}
			st := startStream(t, "http://"+lb.Addr+"/v2/allocate_k8s_token", "lb"+strconv.Itoa(i), 5, 45*time.Second)
			time.Sleep(5 * time.Second)
			for r, s := range servers {
				signalled := time.Now()
				if err := s.Terminate(); err != nil {
					t.Fatal(err)
				}
				out := time.Duration(0) // until out of rotation
			watch:
				for out == 0 {
					select {
					case <-s.Exited():
						break watch
					case <-time.After(20 * time.Millisecond):
					}
					if !lb.InRotation(addrs[r]) {
						out = time.Since(signalled)
					}
				}
				if err := s.Wait(2 * time.Minute); err != nil {
					t.Fatalf("replica %d: exit after SIGTERM: %v, want status 0", r, err)
				}
				exited := time.Since(signalled)
				servers[r] = e.startServer(t, cfgs[r])
				if err := lb.WaitInRotation(addrs[r], time.Minute); err != nil {
					t.Fatal(err)
				}
				t.Logf("replica %d: out of rotation %s after SIGTERM (0: never), exited after %s, back in rotation after %s",
					r, out.Round(time.Millisecond), exited.Round(time.Millisecond), time.Since(signalled).Round(time.Millisecond))
			}
			st.Wait(t, e)
			if n := lb.Dropped(); n > 0 {
				t.Errorf("the load balancer dropped %d connections", n)
			}
		})
	}
}
