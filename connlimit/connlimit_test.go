package connlimit

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// serve runs an HTTP server behind a Limiter of max connections on a
// loopback port; /slow answers once release is closed.
func serve(t *testing.T, max int, release chan struct{}) (string, *Limiter) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(max)
	l.newGrace = 200 * time.Millisecond
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "healthy") })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "slow")
	})
	health := func(r *http.Request) bool { return r.URL.Path == "/health" }
	srv := &http.Server{Handler: l.Gate(mux, health), ConnState: l.ConnState, ConnContext: l.ConnContext}
	go srv.Serve(l.Listen(ln))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return ln.Addr().String(), l
}

// get sends one request on a new connection and returns the body.
func get(addr, path string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestIdleConnectionsMakeRoom(t *testing.T) {
	tests := []struct {
		name string
		idle func(t *testing.T, addr string) net.Conn
	}{
		{"silent new connections", func(t *testing.T, addr string) net.Conn {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}},
		{"keep-alive connections between requests", func(t *testing.T, addr string) net.Conn {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return c
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const max = 5
			addr, l := serve(t, max, make(chan struct{}))
			for range 3 * max {
				c := tc.idle(t, addr)
				t.Cleanup(func() { c.Close() })
			}
			start := time.Now()
			body, err := get(addr, "/", 5*time.Second)
			if err != nil || body != "ok" {
				t.Fatalf("GET / with %d idle connections = %q, %v; want ok", 3*max, body, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("GET / took %s with the limit full of idle connections, want under 2s", d)
			}
			l.mu.Lock()
			open := l.open
			l.mu.Unlock()
			if open > max {
				t.Errorf("%d connections open, want at most %d", open, max)
			}
		})
	}
}

// TestBusyConnectionsAreNotCut fills the limit with requests in progress:
// a new connection waits (it is not reset) and is served once one of them
// ends.
func TestBusyConnectionsAreNotCut(t *testing.T) {
	const max = 3
	release := make(chan struct{})
	addr, _ := serve(t, max, release)
	var wg sync.WaitGroup
	errs := make(chan error, max)
	for range max {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, err := get(addr, "/slow", 10*time.Second)
			if err == nil && body != "slow" {
				err = fmt.Errorf("body %q", body)
			}
			errs <- err
		}()
	}
	time.Sleep(500 * time.Millisecond) // all three in their handler
	done := make(chan error, 1)
	go func() {
		_, err := get(addr, "/", 10*time.Second)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a fourth connection was served (%v) while %d requests held the limit", err, max)
	case <-time.After(time.Second):
	}
	// Health still answers, on the reserve.
	for range 2 * Reserve {
		if body, err := get(addr, "/health", 2*time.Second); err != nil || body != "healthy" {
			t.Fatalf("GET /health at the limit = %q, %v; want healthy", body, err)
		}
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a slow request was cut: %v", err)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("the waiting connection: %v, want it served", err)
	}
}

// TestWaitersNeverCrowdOutHealth holds the one regular slot busy and sends
// more ordinary requests than half the reserve: those beyond it get an
// empty 503 with Retry-After at once, and health still answers.
func TestWaitersNeverCrowdOutHealth(t *testing.T) {
	release := make(chan struct{})
	addr, _ := serve(t, 1, release)
	go get(addr, "/slow", 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	for range Reserve / 2 {
		go get(addr, "/", 10*time.Second) // each waits for the slot
	}
	time.Sleep(500 * time.Millisecond)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != RetryAfter || len(b) != 0 {
		t.Errorf("got %d Retry-After %q body %q, want an empty 503 with Retry-After %s",
			resp.StatusCode, resp.Header.Get("Retry-After"), b, RetryAfter)
	}
	if body, err := get(addr, "/health", 2*time.Second); err != nil || body != "healthy" {
		t.Errorf("GET /health = %q, %v; want healthy", body, err)
	}
	close(release)
}
