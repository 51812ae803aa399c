package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// activatedLog is what the server logs when it serves sockets from systemd.
const activatedLog = "listening on sockets from systemd"

// holdSocket listens on a free loopback port, as systemd does for a socket
// unit, until the test ends.
func holdSocket(t *testing.T) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// TestSocketActivationRestarts holds the listening socket as systemd does
// for epoxy-extension-server.socket, and restarts the server on it three
// times (SIGTERM, wait for the exit, start again: what `systemctl restart`
// does) under a steady 5 token requests a second from fresh machines for
// 45 s, with the default exec backend. Connections made while no server
// runs wait in the socket's backlog: every request gets its 200 and a
// working token, none is refused. Once draining, responses carry
// Connection: close. The worst latency added by a restart is logged.
func TestSocketActivationRestarts(t *testing.T) {
	parallel(t)
	e := env(t)
	sock := holdSocket(t)
	cfg := serverConfig{socket: sock, args: []string{"-shutdown-delay", "1s"}}
	s := e.startServer(t, cfg)
	if !strings.Contains(s.Log(), activatedLog) {
		t.Fatalf("the server did not say it serves the socket from systemd:\n%s", s.Log())
	}
	st := startStream(t, s.URL+"/v2/allocate_k8s_token", "sa", 5, 45*time.Second)
	type restart struct {
		at       time.Duration // SIGTERM, from the stream's start
		gap      time.Duration // from the exit to the next server answering
		noAccept time.Duration // from the old listener's close to the new one's serving
	}
	var restarts []restart
	for i := range 3 {
		time.Sleep(time.Until(st.start.Add(time.Duration(8+12*i) * time.Second)))
		at := time.Since(st.start)
		// A keep-alive connection opened before the signal.
		keep := &http.Client{Transport: &http.Transport{}}
		if resp, err := keep.Get(s.URL + "/"); err != nil || resp.Close {
			t.Fatalf("GET / before SIGTERM: %v (Connection: close %v), want a keep-alive answer", err, resp != nil && resp.Close)
		} else {
			resp.Body.Close()
		}
		if err := s.Terminate(); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			checkConnectionClose(t, s, keep)
		}
		if err := s.Wait(2 * time.Minute); err != nil {
			t.Fatalf("restart %d: server exit: %v, want status 0", i+1, err)
		}
		exited := time.Now()
		old := s
		s = e.startServer(t, cfg)
		restarts = append(restarts, restart{at, time.Since(exited),
			logTime(t, s.Log(), "serving").Sub(logTime(t, old.Log(), "shutting down: draining requests in flight"))})
		if !strings.Contains(s.Log(), activatedLog) {
			t.Fatalf("restart %d: the server did not serve the socket from systemd:\n%s", i+1, s.Log())
		}
	}
	st.Wait(t, e)
	p50, worst := st.latencies(0, restarts[0].at)
	t.Logf("before the first restart: p50 %s, worst %s", p50.Round(time.Millisecond), worst.Round(time.Millisecond))
	for i, r := range restarts {
		p50, worst := st.latencies(r.at, r.at+5*time.Second)
		t.Logf("restart %d at %s: no process accepting for %s, no process at all for %s; requests sent from the SIGTERM to 5 s later: p50 %s, worst %s",
			i+1, r.at.Round(time.Millisecond), r.noAccept.Round(time.Millisecond), r.gap.Round(time.Millisecond),
			p50.Round(time.Millisecond), worst.Round(time.Millisecond))
	}
}

// logTime returns the time of the first line of log whose msg is msg.
func logTime(t *testing.T, log, msg string) time.Time {
	t.Helper()
	line := logLine(log, msg)
	at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(line["time"]))
	if err != nil {
		t.Fatalf("no time on log line %q: %v", msg, err)
	}
	return at
}

// checkConnectionClose waits until s, just sent SIGTERM, drains (/ready
// 503), then checks that keep's pooled connection was closed between
// requests and that a response carries Connection: close.
func checkConnectionClose(t *testing.T, s *Server, keep *http.Client) {
	t.Helper()
	err := Poll(10*time.Second, 10*time.Millisecond, s.proc, func(context.Context) error {
		got, err := sendNewConn(s.URL+"/ready", nil)
		if err == nil && got.status != http.StatusServiceUnavailable {
			return fmt.Errorf("GET /ready = %d, want 503", got.status)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // Drain, then keep-alives off
	resp, err := keep.Get(s.URL + "/")
	if err != nil {
		t.Fatalf("GET / while draining, on a client whose pooled connection the server closed: %v", err)
	}
	resp.Body.Close()
	if !resp.Close || resp.StatusCode != http.StatusOK {
		t.Errorf("GET / while draining = %d, Connection: close %v; want 200 and close", resp.StatusCode, resp.Close)
	}
}
