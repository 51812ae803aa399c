package connlimit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/m-lab/epoxy-extensions/overload"
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
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != overload.RetryAfter || len(b) != 0 {
		t.Errorf("got %d Retry-After %q body %q, want an empty 503 with Retry-After %s",
			resp.StatusCode, resp.Header.Get("Retry-After"), b, overload.RetryAfter)
	}
	if body, err := get(addr, "/health", 2*time.Second); err != nil || body != "healthy" {
		t.Errorf("GET /health = %q, %v; want healthy", body, err)
	}
	close(release)
}

// TestShutdownAtTheLimit fills every slot, the reserve too, with requests
// that do not end, so that Accept waits for a slot; http.Server.Shutdown
// must still return at its deadline (it waits for Serve to return before
// it counts), and the waiting Accept must return net.ErrClosed.
func TestShutdownAtTheLimit(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := inner.Addr().String()
	l := New(1)
	release := make(chan struct{})
	defer close(release)
	var started sync.WaitGroup
	started.Add(1 + Reserve)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Done()
		<-release
	})
	// Every request counts as a health request: those on the reserve are
	// served at once, and hold it.
	srv := &http.Server{Handler: l.Gate(slow, func(*http.Request) bool { return true }), ConnState: l.ConnState, ConnContext: l.ConnContext}
	ln := l.Listen(inner)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	for range 1 + Reserve {
		go get(addr, "/", 30*time.Second)
	}
	started.Wait()
	// One more connection waits in the backlog: Accept is waiting for a slot.
	waiting, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	time.Sleep(200 * time.Millisecond)

	const grace = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	shut := make(chan error, 1)
	start := time.Now()
	go func() { shut <- srv.Shutdown(ctx) }()
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want %v (requests were still running)", err, context.DeadlineExceeded)
		}
		t.Logf("Shutdown returned %s after it began, grace %s", time.Since(start).Round(time.Millisecond), grace)
	case <-time.After(10 * time.Second):
		t.Fatalf("Shutdown still running 10s after it began with a %s grace: Accept outlived its listener", grace)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve = %v, want %v", err, http.ErrServerClosed)
	}
}

// TestAcceptReturnsWhenClosed closes a listener while its Accept waits at
// the limit: Accept returns net.ErrClosed and frees no slot it never took.
func TestAcceptReturnsWhenClosed(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(1)
	ln := l.Listen(inner)
	first, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l.ConnState(c, http.StateActive) // busy: it cannot make room
	l.mu.Lock()
	l.reserved = Reserve // and the reserve is full
	l.mu.Unlock()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	select {
	case err := <-accepted:
		t.Fatalf("Accept returned (%v) with every slot taken", err)
	case <-time.After(300 * time.Millisecond):
	}
	ln.Close()
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close = %v, want %v", err, net.ErrClosed)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept still waiting 10s after its listener closed")
	}
	l.mu.Lock()
	open, reserved := l.open, l.reserved
	l.mu.Unlock()
	if open != 1 || reserved != Reserve {
		t.Errorf("open %d, reserved %d after the closed Accept; want 1 and %d", open, reserved, Reserve)
	}
}

// TestWaitSilent checks that WaitSilent waits while an accepted connection
// has sent nothing, and returns once its request is in, or it closed.
func TestWaitSilent(t *testing.T) {
	addr, l := serve(t, 4, nil)
	wait := func(d time.Duration) bool {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		return l.WaitSilent(ctx)
	}
	if !wait(time.Second) {
		t.Fatal("WaitSilent() = false with no connection")
	}
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // accepted
	if wait(100 * time.Millisecond) {
		t.Fatal("WaitSilent() = true with a connection that sent nothing")
	}
	fmt.Fprint(silent, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if !wait(time.Second) {
		t.Error("WaitSilent() = false after the connection sent its request")
	}
	other, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	other.Close()
	if !wait(time.Second) {
		t.Error("WaitSilent() = false after the silent connection closed")
	}
	silent.Close()
}
