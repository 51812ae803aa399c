// Package hostname holds the checks of names and addresses that the request
// path makes before any backend runs: the one hostname check, an API
// server's host:port, and the BMC name of an M-Lab machine. It depends on no
// backend, so that the handler and its fuzz targets stay light.
package hostname

import (
	"net"
	"strconv"
	"strings"
)

// Valid reports whether name is a lowercase DNS name as RFC 1123 and
// Kubernetes node names define it, the only kind of hostname the server
// accepts: at most 253 characters, dot-separated
// labels of 1 to 63 characters from [a-z0-9-], none starting or ending with
// '-'. Such a name can never be read as a command-line flag.
func Valid(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if label == 0 || name[i-1] == '-' {
				return false
			}
			label = 0
			continue
		case c == '-':
			if label == 0 {
				return false
			}
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		default:
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return label > 0 && name[len(name)-1] != '-'
}

// ValidAddress reports whether addr is host:port with a host and a port
// from 1 to 65535: what `kubeadm join` expects as its argument.
func ValidAddress(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || strings.ContainsAny(host, "/?#@ ") {
		return false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n > 0
}
