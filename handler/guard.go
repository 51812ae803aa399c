package handler

import (
	"fmt"
	"net/netip"
	"strings"
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
