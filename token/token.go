// Package token creates Kubernetes bootstrap tokens and returns what a
// machine needs to join the cluster. Slots caps the live tokens of each host
// with the cluster as the only record, and revokes them; it keeps them in a
// Store: Kubeadm runs `kubeadm token create` and kubectl, API writes the same
// bootstrap-token Secret through the Kubernetes API. RevokeOnReady revokes a
// host's tokens once its Node is Ready.
package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/redact"
)

// Join is what a machine needs to join the cluster, as printed by
// `kubeadm token create --print-join-command`.
type Join struct {
	APIAddress string `json:"api_address"`
	Token      string `json:"token"`
	CAHash     string `json:"ca_hash"`
}

// Kubeadm keeps tokens with the programs M-Lab's server runs: it creates
// them with `kubeadm token create ID.SECRET`, reads and deletes their
// Secrets with kubectl. It is a Store.
type Kubeadm struct {
	// Runner runs kubeadm and kubectl.
	Runner command.Runner
	// BinDir holds the kubeadm and kubectl binaries.
	BinDir string
	// Kubeconfig, when set, is passed to kubeadm and kubectl as --kubeconfig.
	Kubeconfig string
	// TTL is the lifetime of each token.
	TTL time.Duration
}

var _ Store = (*Kubeadm)(nil)

// ErrBadOutput means kubeadm succeeded but printed something that is not a
// join command we can trust.
var ErrBadOutput = errors.New("unexpected kubeadm output")

// Put runs `kubeadm token create --config FILE --print-join-command` and
// returns the join details it prints. FILE, readable only by this user and
// removed afterwards, holds the token with its TTL and description: on the
// command line the token would be visible to every local user in the
// process list. kubeadm refuses an id that exists ("already exists"), which
// Put returns as ErrSlotTaken.
func (k *Kubeadm) Put(ctx context.Context, tok, description string, _ time.Time) (Join, error) {
	cfg, err := k.writeConfig(tok, description)
	if err != nil {
		return Join{}, err
	}
	defer os.Remove(cfg)
	args := []string{"token", "create", "--config", cfg, "--print-join-command"}
	if k.Kubeconfig != "" {
		args = append(args, "--kubeconfig", k.Kubeconfig)
	}
	out, err := k.Runner.Run(ctx, filepath.Join(k.BinDir, "kubeadm"), args...)
	if err != nil {
		if strings.Contains(err.Error(), "already exists") {
			return Join{}, fmt.Errorf("kubeadm token create: %w", ErrSlotTaken)
		}
		return Join{}, fmt.Errorf("kubeadm token create: %w", err)
	}
	return ParseJoinCommand(string(out))
}

// initConfig is the part of kubeadm's InitConfiguration (v1beta4, kubeadm
// 1.31 and later) that `kubeadm token create --config` reads: one bootstrap
// token with kubeadm's default usages and group.
type initConfig struct {
	APIVersion      string           `json:"apiVersion"`
	Kind            string           `json:"kind"`
	BootstrapTokens []bootstrapToken `json:"bootstrapTokens"`
}

type bootstrapToken struct {
	Token       string   `json:"token"`
	Description string   `json:"description,omitempty"`
	TTL         string   `json:"ttl"`
	Usages      []string `json:"usages"`
	Groups      []string `json:"groups"`
}

// writeConfig writes the kubeadm configuration for tok (JSON, which kubeadm
// reads as YAML) to a new file only this user can read, and returns its
// path.
func (k *Kubeadm) writeConfig(tok, description string) (string, error) {
	b, err := json.Marshal(initConfig{
		APIVersion: "kubeadm.k8s.io/v1beta4",
		Kind:       "InitConfiguration",
		BootstrapTokens: []bootstrapToken{{
			Token: tok, Description: description, TTL: k.TTL.String(),
			Usages: []string{"signing", "authentication"}, Groups: []string{NodeGroup},
		}},
	})
	if err != nil {
		return "", fmt.Errorf("kubeadm configuration: %w", err)
	}
	f, err := os.CreateTemp("", "epoxy-extensions-token-*.json") // mode 0600
	if err != nil {
		return "", fmt.Errorf("kubeadm configuration: %w", err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("kubeadm configuration: %w", err)
	}
	return f.Name(), nil
}

// Description is the token description kubeadm stores for host.
func Description(host string) string {
	if host == "" {
		return "Allow an unnamed machine to join the cluster"
	}
	return fmt.Sprintf("Allow %s to join the cluster", host)
}

var (
	tokenRE  = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	caHashRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// ParseJoinCommand reads the output of `kubeadm token create
// --print-join-command`: "kubeadm join HOST:PORT --token T
// --discovery-token-ca-cert-hash sha256:H" followed by optional flags, in any
// order, with "--flag value" or "--flag=value". The first CA hash is returned;
// every hash given must be well formed. Errors never contain the token.
func ParseJoinCommand(out string) (Join, error) {
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
	if !kube.ValidAddress(j.APIAddress) {
		return Join{}, fmt.Errorf("%w: API address %q is not host:port", ErrBadOutput, redact.String(j.APIAddress))
	}
	return j, nil
}

// Name is the backend's name in logs and metrics: "kubeadm".
func (*Kubeadm) Name() string { return "kubeadm" }
