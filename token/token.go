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
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

// Join is what a machine needs to join the cluster (joincmd.Join).
type Join = joincmd.Join

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

// ErrBadOutput means kubeadm or kubectl succeeded but printed something we
// cannot trust (joincmd.ErrBadOutput).
var ErrBadOutput = joincmd.ErrBadOutput

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
	return joincmd.Parse(string(out))
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

// Name is the backend's name in logs and metrics: "kubeadm".
func (*Kubeadm) Name() string { return "kubeadm" }
