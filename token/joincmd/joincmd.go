// Package joincmd reads the join command that `kubeadm token create
// --print-join-command` prints: what a machine needs to join the cluster. It
// depends on no backend, so that the handler and the fuzz targets stay
// light.
package joincmd

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/redact"
)

// Join is what a machine needs to join the cluster, as printed by
// `kubeadm token create --print-join-command`.
type Join struct {
	APIAddress string `json:"api_address"`
	Token      string `json:"token"`
	CAHash     string `json:"ca_hash"`
}

// ErrBadOutput means kubeadm succeeded but printed something that is not a
// join command we can trust.
var ErrBadOutput = errors.New("unexpected kubeadm output")

var (
	tokenRE  = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	caHashRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// Parse reads the output of `kubeadm token create
// --print-join-command`: "kubeadm join HOST:PORT --token T
// --discovery-token-ca-cert-hash sha256:H" followed by optional flags, in any
// order, with "--flag value" or "--flag=value". The first CA hash is returned;
// every hash given must be well formed. Errors never contain the token.
func Parse(out string) (Join, error) {
	fields := strings.Fields(out)
	if len(fields) < 3 || fields[0] != "kubeadm" || fields[1] != "join" {
		return Join{}, fmt.Errorf("%w: not a join command", ErrBadOutput)
	}
	var j Join
	for i := 2; i < len(fields); i++ {
		f := fields[i]
		if !strings.HasPrefix(f, "-") {
			if j.APIAddress != "" {
				return Join{}, fmt.Errorf("%w: more than one API address", ErrBadOutput)
			}
			j.APIAddress = f
			continue
		}
		name, value, hasValue := strings.Cut(f, "=")
		switch name {
		case "--control-plane":
			continue // a flag without a value
		case "--token", "--discovery-token-ca-cert-hash", "--certificate-key":
		default:
			return Join{}, fmt.Errorf("%w: unknown flag %q", ErrBadOutput, redact.String(name))
		}
		if !hasValue {
			if i+1 >= len(fields) {
				return Join{}, fmt.Errorf("%w: %s has no value", ErrBadOutput, name)
			}
			i++
			value = fields[i]
		}
		switch name {
		case "--token":
			if j.Token != "" || !tokenRE.MatchString(value) {
				return Join{}, fmt.Errorf("%w: malformed or repeated token", ErrBadOutput)
			}
			j.Token = value
		case "--discovery-token-ca-cert-hash":
			if !caHashRE.MatchString(value) {
				return Join{}, fmt.Errorf("%w: malformed CA hash %q", ErrBadOutput, redact.String(value))
			}
			if j.CAHash == "" {
				j.CAHash = value
			}
		}
	}
	if j.Token == "" || j.CAHash == "" || j.APIAddress == "" {
		return Join{}, fmt.Errorf("%w: missing API address, token or CA hash", ErrBadOutput)
	}
	if !hostname.ValidAddress(j.APIAddress) {
		return Join{}, fmt.Errorf("%w: API address %q is not host:port", ErrBadOutput, redact.String(j.APIAddress))
	}
	return j, nil
}
