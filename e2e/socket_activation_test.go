package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// What the server logs when it serves sockets from systemd, and when its
// drain begins (after -shutdown-delay).
const (
	activatedLog = "listening on sockets from systemd"
	drainLog     = "shutting down: draining requests in flight"
)

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
// working token, none is refused. The latencies before the first restart
// and after each, and how long no process accepted, are logged.
func TestSocketActivationRestarts(t *testing.T) {
	parallel(t)
	e := env(t)
	sock := holdSocket(t)
	cfg := serverConfig{socket: sock, args: []string{"-shutdown-delay", "1s"}}
	s := e.startServer(t, cfg)
	if !logSays(s, activatedLog) {
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
		if err := s.Terminate(); err != nil {
			t.Fatal(err)
		}
		if err := s.Wait(2 * time.Minute); err != nil {
			t.Fatalf("restart %d: server exit: %v, want status 0", i+1, err)
		}
		exited := time.Now()
		old := s
		s = e.startServer(t, cfg)
		restarts = append(restarts, restart{at, time.Since(exited),
			logTime(t, s, "serving").Sub(logTime(t, old, drainLog))})
		if !logSays(s, activatedLog) {
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

// logSays reports whether s's log holds text, waiting for it as awaitLog.
func logSays(s *Server, text string) bool {
	return awaitLog(s, func(log string) bool { return strings.Contains(log, text) })
}

// logTime returns the time of the first line of s's log whose msg is msg,
// waiting for it as awaitLog.
func logTime(t *testing.T, s *Server, msg string) time.Time {
	t.Helper()
	var line map[string]any
	if !awaitLog(s, func(log string) bool { line = logLine(log, msg); return line != nil }) {
		t.Fatalf("no log line %q", msg)
	}
	at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(line["time"]))
	if err != nil {
		t.Fatalf("log line %q: %v", msg, err)
	}
	return at
}

// awaitLog reports whether found accepts s's log within 10 s, checking
// every 20 ms: the server may answer before its log is read.
func awaitLog(s *Server, found func(log string) bool) bool {
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if found(s.Log()) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// TestDrainingClosesConnections checks what a client pooling keep-alive
// connections (ePoxy's reverse proxy) sees once the server drains: a
// connection idle between requests at the signal is closed by the server,
// and a request on a connection that stays open is answered with
// Connection: close, so that the client opens a new connection, which a
// load balancer sends to another replica.
func TestDrainingClosesConnections(t *testing.T) {
	parallel(t)
	e := env(t)
	// Long enough to look at the connections before the drain ends.
	s := e.startServer(t, serverConfig{args: []string{"-shutdown-delay", "10s"}})
	addr := strings.TrimPrefix(s.URL, "http://")
	get := func(c net.Conn, r *bufio.Reader) (*http.Response, error) {
		c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp, err
	}
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idleReader := bufio.NewReader(idle)
	if resp, err := get(idle, idleReader); err != nil || resp.Close {
		t.Fatalf("GET / before SIGTERM: %v, want a keep-alive answer", err)
	}
	signalled := time.Now()
	if err := s.Terminate(); err != nil {
		t.Fatal(err)
	}
	err = Poll(9*time.Second, 20*time.Millisecond, s.proc, func(context.Context) error {
		got, err := sendNewConn(s.URL+"/ready", nil)
		if err == nil && got.status != http.StatusServiceUnavailable {
			return fmt.Errorf("GET /ready = %d, want 503", got.status)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// The idle connection is closed, during the delay: a read sees the
	// end, not an answer, before the drain starts.
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idleReader.ReadByte(); err != io.EOF {
		t.Errorf("reading the idle keep-alive connection after SIGTERM: %v, %v; want EOF (closed by the server)", n, err)
	} else if strings.Contains(s.Log(), drainLog) {
		t.Errorf("the idle keep-alive connection was closed only once the drain began, not when the delay did")
	} else {
		t.Logf("idle keep-alive connection closed by the server within %s of SIGTERM (-shutdown-delay 10s)", time.Since(signalled).Round(time.Millisecond))
	}
	// A new connection is served, with Connection: close.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := get(c, bufio.NewReader(c))
	if err != nil {
		t.Fatalf("GET / while draining: %v", err)
	}
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("GET / while draining = %d, Connection: close %v; want 200 and close", resp.StatusCode, resp.Close)
	}
	if err := s.Wait(time.Minute); err != nil {
		t.Errorf("server exit after SIGTERM: %v, want status 0", err)
	}
}
