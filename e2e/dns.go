package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSServer is a DNS server on loopback (UDP) that knows a fixed set of
// names, for the server's -dns-server: it lets a sandbox BMC name resolve
// without touching the machine's /etc/hosts, and without root. A known name
// answers its IPv4 address (A) and nothing else; any other name is NXDOMAIN.
type DNSServer struct {
	// Addr is "127.0.0.1:PORT".
	Addr string

	conn  net.PacketConn
	names map[string]netip.Addr // FQDN, lower case, with the final dot
	wg    sync.WaitGroup
}

// dnsReaders is how many goroutines read queries.
const dnsReaders = 4

// StartDNS serves records, name → IPv4 address, on a free loopback port.
func StartDNS(records map[string]string) (*DNSServer, error) {
	s := &DNSServer{names: map[string]netip.Addr{}}
	for name, addr := range records {
		ip, err := netip.ParseAddr(addr)
		if err != nil || !ip.Is4() {
			return nil, fmt.Errorf("dns: %q is not an IPv4 address", addr)
		}
		s.names[strings.ToLower(strings.TrimSuffix(name, "."))+"."] = ip
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	s.conn, s.Addr = conn, conn.LocalAddr().String()
	// A boot storm sends a thousand lookups at once: a larger socket
	// buffer and a few readers keep the burst from overflowing it.
	if c, ok := conn.(*net.UDPConn); ok {
		c.SetReadBuffer(4 << 20)
	}
	for range dnsReaders {
		s.wg.Go(s.serve)
	}
	return s, nil
}

// Close stops the server.
func (s *DNSServer) Close() {
	s.conn.Close()
	s.wg.Wait()
}

func (s *DNSServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		if reply, err := s.answer(buf[:n]); err == nil {
			s.conn.WriteTo(reply, from)
		}
	}
}

// answer builds the reply to one query packet.
func (s *DNSServer) answer(query []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	ip, known := s.names[strings.ToLower(q.Name.String())]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if known && q.Type == dnsmessage.TypeA {
		if err := b.StartAnswers(); err != nil {
			return nil, err
		}
		rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
		if err := b.AResource(rr, dnsmessage.AResource{A: ip.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}
