package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/m-lab/epoxy-extensions/loadtest/storm"

	"github.com/m-lab/epoxy-extensions/hostname"
)

// maxBody bounds what one answer may make us hold; a join answer is ~150 bytes.
const maxBody = 1 << 20

var (
	// tokenRE is the bootstrap token format kubeadm hands out. An OK answer
	// carrying anything else is as useless to a booting machine as an error.
	tokenRE = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
)

// Result is what one machine saw.
type Result struct {
	// Host is the hostname the machine sent.
	Host string
	// Status is the HTTP status, or 0 when no answer arrived.
	Status int
	// Err is the transport error, or why an OK body was unusable.
	Err error
	// Latency runs from sending the request to reading the whole answer.
	Latency time.Duration
	// Token is the join token of an OK answer whose body was usable.
	Token string
}

// makeHosts builds one hostname per machine from format and the machine's
// index. It refuses a format that yields invalid or repeated names, since the
// server would refuse the former and the latter would hide crossings.
func makeHosts(format string, n int) ([]string, error) {
	hosts := make([]string, n)
	seen := make(map[string]bool, n)
	for i := range hosts {
		h := fmt.Sprintf(format, i)
		if strings.Contains(h, "%!") {
			return nil, fmt.Errorf("-host-format %q: bad verb for one int argument: %q", format, h)
		}
		if !hostname.Valid(h) {
			return nil, fmt.Errorf("-host-format %q: %q is not a lowercase DNS name", format, h)
		}
		if seen[h] {
			return nil, fmt.Errorf("-host-format %q: %q repeats; the format must use the machine index", format, h)
		}
		seen[h] = true
		hosts[i] = h
	}
	return hosts, nil
}

// requestBody is the extension request a cloud VM sends (join-cluster.sh).
func requestBody(host string, lastBoot time.Time) []byte {
	type v1 struct {
		Hostname string `json:"hostname"`
		LastBoot string `json:"last_boot"`
	}
	b, err := json.Marshal(struct {
		V1 v1 `json:"v1"`
	}{v1{host, lastBoot.Format(time.RFC3339Nano)}})
	if err != nil {
		panic(err) // two strings always marshal
	}
	return b
}

// newClient returns a client that lets n requests each hold their own
// connection, as n real machines would, instead of queueing behind the
// default two idle connections per host.
func newClient(n int, timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = n
	tr.MaxIdleConnsPerHost = n
	tr.MaxConnsPerHost = n
	// HTTP/2 would multiplex every machine over one connection.
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	// The server is reached directly; a proxy from the environment would
	// measure the proxy.
	tr.Proxy = nil
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		// Machines use curl without -L: a redirect is the answer they get.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Storm sends one request per host to target, all released at the same
// instant, and returns the results in host order and the wall time from the
// release to the last answer. v1 selects the bare-token answer format of
// /v1/allocate_k8s_token instead of v2's JSON.
func Storm(ctx context.Context, client *http.Client, target string, v1 bool, hosts []string) ([]Result, time.Duration) {
	results := make([]Result, len(hosts))
	// Build the bodies before the release so that marshalling is not part
	// of the storm.
	bodies := make([][]byte, len(hosts))
	for i, host := range hosts {
		bodies[i] = requestBody(host, time.Now())
	}
	wall := storm.Release(len(hosts), func(i int) {
		results[i] = send(ctx, client, target, v1, hosts[i], bodies[i])
	})
	return results, wall
}

// send makes one machine's request and reads its answer.
func send(ctx context.Context, client *http.Client, target string, v1 bool, host string, body []byte) Result {
	r := Result{Host: host}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		r.Err = err
		return r
	}
	// What curl --data sends; the server must not care.
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	t := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		r.Latency = time.Since(t)
		r.Err = err
		return r
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	r.Latency = time.Since(t)
	r.Status = resp.StatusCode
	if err != nil {
		r.Err = fmt.Errorf("reading body: %w", err)
		return r
	}
	if r.Status == http.StatusOK {
		r.Token, r.Err = parseToken(v1, b)
	}
	return r
}

// parseToken extracts the token from an OK answer. Errors never contain the
// token, so they can be printed.
func parseToken(v1 bool, body []byte) (string, error) {
	tok := strings.TrimSpace(string(body))
	if !v1 {
		var j struct {
			APIAddress string `json:"api_address"`
			Token      string `json:"token"`
			CAHash     string `json:"ca_hash"`
		}
		if err := json.Unmarshal(body, &j); err != nil {
			return "", fmt.Errorf("v2 body is not JSON: %w", err)
		}
		// setup_k8s.sh feeds all three to kubeadm join.
		if j.APIAddress == "" || j.CAHash == "" {
			return "", errors.New("v2 body lacks api_address or ca_hash")
		}
		tok = j.Token
	}
	if !tokenRE.MatchString(tok) {
		return "", errors.New("token is not [a-z0-9]{6}.[a-z0-9]{16}")
	}
	return tok, nil
}
