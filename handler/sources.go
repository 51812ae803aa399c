package handler

import (
	"fmt"
	"net/netip"
	"strings"
)

// Sources lists the networks allowed to call the extension endpoints. An
// empty list allows every caller; ParseSources never returns one.
type Sources []netip.Prefix

// AnySource is the -allowed-sources value that opens the extension
// endpoints to every address.
const AnySource = "any"

// PrivateSources are the networks allowed when -allowed-sources is empty:
// private (RFC 1918, RFC 6598 shared, IPv6 unique local) and loopback
// addresses. M-Lab's callers, ePoxy through the internal load balancer and
// VMs on the VPC, all come from them.
var PrivateSources = Sources{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("::1/128"),
}

// everySource allows every IPv4 and IPv6 address.
var everySource = Sources{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// ParseSources reads a comma-separated list of CIDR prefixes or addresses,
// such as "10.0.0.0/8,192.0.2.7". An empty list means PrivateSources, and
// "any" every address.
func ParseSources(list string) (Sources, error) {
	if strings.TrimSpace(list) == AnySource {
		return everySource, nil
	}
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
	if len(s) == 0 {
		return PrivateSources, nil
	}
	return s, nil
}

// AllowsAny reports whether s admits every IPv4 and every IPv6 address.
func (s Sources) AllowsAny() bool {
	var v4, v6 bool
	for _, p := range s {
		if p.Bits() == 0 {
			v4 = v4 || p.Addr().Is4()
			v6 = v6 || p.Addr().Is6()
		}
	}
	return len(s) == 0 || (v4 && v6)
}

// Allows reports whether a request from remoteAddr ("ip:port", as in
// http.Request.RemoteAddr) may proceed. An IPv4-mapped IPv6 address counts
// as its IPv4 address.
func (s Sources) Allows(remoteAddr string) bool {
	if len(s) == 0 {
		return true
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	return s.contains(ap.Addr().Unmap())
}

func (s Sources) contains(a netip.Addr) bool {
	for _, p := range s {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
