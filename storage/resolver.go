package storage

import (
	"context"
	"net"
	"time"
)

// dialTimeout bounds connecting to the DNS server named by NewResolver; the
// lookup's context bounds the rest.
const dialTimeout = 5 * time.Second

// NewResolver returns a resolver that asks only the DNS server at addr
// (host:port), instead of the system's configuration: for an operator who
// wants BMC names resolved by a particular server, and for the local stack,
// which resolves its sandbox BMC name without touching /etc/hosts.
func NewResolver(addr string) *net.Resolver {
	d := net.Dialer{Timeout: dialTimeout}
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
	}
}
