package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// HealthCheck is how a LoadBalancer checks its backends, in the terms of a
// cloud load balancer's health check.
type HealthCheck struct {
	// Path, when set, is fetched with GET: a backend passes when it
	// answers 200. Empty means a TCP check: a backend passes when it
	// accepts a connection.
	Path string
	// Interval is the time from the end of one check to the next;
	// Timeout bounds each.
	Interval, Timeout time.Duration
	// Healthy and Unhealthy are the thresholds: that many passes in a row
	// put a backend in rotation, that many failures take it out.
	Healthy, Unhealthy int
}

// LoadBalancer is a small TCP (passthrough) load balancer on loopback: each
// client connection goes whole to one backend in rotation, round robin. It
// never retries a connection on another backend; a connection that arrives
// with no backend in rotation, or whose backend refuses it, is closed
// without an answer.
type LoadBalancer struct {
	// Addr is where clients connect: "127.0.0.1:PORT".
	Addr string

	ln    net.Listener
	check HealthCheck
	stop  chan struct{}
	wg    sync.WaitGroup

	mu       sync.Mutex
	backends []*lbBackend
	next     int
	dropped  int // connections closed without a backend
}

type lbBackend struct {
	addr    string
	healthy bool // in rotation
	streak  int  // checks in a row that disagreed with healthy
}

// StartLoadBalancer balances over backends (host:port), each out of
// rotation until it passes check Healthy times in a row.
func StartLoadBalancer(check HealthCheck, backends ...string) (*LoadBalancer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	lb := &LoadBalancer{Addr: ln.Addr().String(), ln: ln, check: check, stop: make(chan struct{})}
	for _, addr := range backends {
		b := &lbBackend{addr: addr}
		lb.backends = append(lb.backends, b)
		lb.wg.Go(func() { lb.checkLoop(b) })
	}
	lb.wg.Go(lb.serve)
	return lb, nil
}

// InRotation reports whether backend addr is in rotation.
func (lb *LoadBalancer) InRotation(addr string) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for _, b := range lb.backends {
		if b.addr == addr {
			return b.healthy
		}
	}
	return false
}

// WaitInRotation waits up to timeout for backend addr to be in rotation.
func (lb *LoadBalancer) WaitInRotation(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !lb.InRotation(addr) {
		if time.Now().After(deadline) {
			return fmt.Errorf("backend %s not in rotation after %s", addr, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// Dropped returns how many client connections were closed unanswered.
func (lb *LoadBalancer) Dropped() int {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return lb.dropped
}

// Close stops the load balancer and waits for its connections to end.
func (lb *LoadBalancer) Close() {
	close(lb.stop)
	lb.ln.Close()
	lb.wg.Wait()
}

func (lb *LoadBalancer) checkLoop(b *lbBackend) {
	client := &http.Client{Timeout: lb.check.Timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		pass := lb.probe(client, b.addr)
		lb.mu.Lock()
		if pass == b.healthy {
			b.streak = 0
		} else if b.streak++; (pass && b.streak >= lb.check.Healthy) || (!pass && b.streak >= lb.check.Unhealthy) {
			b.healthy, b.streak = pass, 0
		}
		lb.mu.Unlock()
		select {
		case <-lb.stop:
			return
		case <-time.After(lb.check.Interval):
		}
	}
}

// probe runs one health check of addr.
func (lb *LoadBalancer) probe(client *http.Client, addr string) bool {
	if lb.check.Path == "" {
		c, err := net.DialTimeout("tcp", addr, lb.check.Timeout)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), lb.check.Timeout)
	defer cancel()
	return httpOK(ctx, client, "http://"+addr+lb.check.Path, "") == nil
}

// pick returns the next backend in rotation, or "" when none is.
func (lb *LoadBalancer) pick() string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for range lb.backends {
		b := lb.backends[lb.next%len(lb.backends)]
		lb.next++
		if b.healthy {
			return b.addr
		}
	}
	lb.dropped++
	return ""
}

func (lb *LoadBalancer) serve() {
	for {
		c, err := lb.ln.Accept()
		if err != nil {
			return
		}
		lb.wg.Go(func() { lb.proxy(c.(*net.TCPConn)) })
	}
}

// proxy copies c to and from a backend until both sides have closed.
func (lb *LoadBalancer) proxy(c *net.TCPConn) {
	defer c.Close()
	addr := lb.pick()
	if addr == "" {
		return
	}
	b, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		lb.mu.Lock()
		lb.dropped++
		lb.mu.Unlock()
		return
	}
	defer b.Close()
	var wg sync.WaitGroup
	half := func(dst, src *net.TCPConn) {
		io.Copy(dst, src)
		dst.CloseWrite()
	}
	wg.Go(func() { half(b.(*net.TCPConn), c) })
	half(c, b.(*net.TCPConn))
	wg.Wait()
}
