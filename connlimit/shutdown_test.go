package connlimit

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

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
