package main

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestStalledClientsCannotHoldTheServer opens many connections that send half
// a request and stop (slowloris). The server must keep answering others and
// drop the stalled ones once the header timeout passes.
func TestStalledClientsCannotHoldTheServer(t *testing.T) {
	old := headerTimeout
	headerTimeout = 500 * time.Millisecond
	t.Cleanup(func() { headerTimeout = old })

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	srv := newHTTPServer(h, time.Second, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	const stalled = 200
	conns := make([]net.Conn, 0, stalled)
	for range stalled {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, "POST /v2/allocate_k8s_token HTTP/1.1\r\nHost: x\r\n") // and never finish
		conns = append(conns, c)
	}

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatalf("GET / with %d stalled clients: %v", stalled, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET / with %d stalled clients = %d, want 200", stalled, resp.StatusCode)
	}

	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		// The server answers a timed-out header read with nothing or a
		// 408 and then closes: either way the read ends without our help.
		_, err := io.Copy(io.Discard, bufio.NewReader(c))
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("stalled connection %d still open after 10 s, want it closed after the %s header timeout", i, headerTimeout)
		}
	}
}
