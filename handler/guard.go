package handler

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Sources lists the networks allowed to call the extension endpoints. An
// empty list allows every caller.
type Sources []netip.Prefix

// ParseSources reads a comma-separated list of CIDR prefixes or addresses,
// such as "10.0.0.0/8,192.0.2.7".
func ParseSources(list string) (Sources, error) {
	var s Sources
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, fmt.Errorf("allowed source %q: %w", f, err)
			}
			s = append(s, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("allowed source %q: %w", f, err)
		}
		s = append(s, p.Masked())
	}
	return s, nil
}

// Allows reports whether a request from remoteAddr ("ip:port", as in
// http.Request.RemoteAddr) may proceed.
func (s Sources) Allows(remoteAddr string) bool {
	if len(s) == 0 {
		return true
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	for _, p := range s {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// maxBudgetHosts bounds the hosts a Budget tracks, so that made-up hostnames
// cannot grow the server without limit. Beyond it, new hosts are refused
// until old entries expire.
const maxBudgetHosts = 100_000

// Budget allows each host at most Max tokens per Window. A zero Max means no
// limit. It is safe for concurrent use.
type Budget struct {
	Max    int
	Window time.Duration
	// Now returns the current time; time.Now when nil.
	Now func() time.Time

	mu        sync.Mutex
	hosts     map[string][]time.Time
	lastSweep time.Time
}

// Take spends one of host's tokens and reports whether one was left.
func (b *Budget) Take(host string) bool {
	if b == nil || b.Max <= 0 {
		return true
	}
	now := time.Now()
	if b.Now != nil {
		now = b.Now()
	}
	cutoff := now.Add(-b.Window)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.hosts == nil {
		b.hosts = make(map[string][]time.Time)
	}
	if len(b.hosts) >= maxBudgetHosts || now.Sub(b.lastSweep) > b.Window {
		b.sweep(cutoff)
		b.lastSweep = now
	}
	times, known := b.hosts[host]
	i := 0
	for i < len(times) && !times[i].After(cutoff) {
		i++
	}
	times = times[i:]
	if len(times) >= b.Max {
		b.hosts[host] = times
		return false
	}
	if !known && len(b.hosts) >= maxBudgetHosts {
		return false
	}
	b.hosts[host] = append(times, now)
	return true
}

// Return gives back the token Take spent for host, when no token was made
// after all: a kubeadm failure must not use up a machine's budget.
func (b *Budget) Return(host string) {
	if b == nil || b.Max <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if times := b.hosts[host]; len(times) > 0 {
		b.hosts[host] = times[:len(times)-1]
	}
}

// sweep forgets hosts whose every token is older than cutoff.
func (b *Budget) sweep(cutoff time.Time) {
	for h, times := range b.hosts {
		if len(times) == 0 || !times[len(times)-1].After(cutoff) {
			delete(b.hosts, h)
		}
	}
}
