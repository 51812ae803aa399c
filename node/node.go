// Package node removes machines from the Kubernetes cluster: Kubectl runs
// `kubectl delete node`, API deletes the Node through the Kubernetes API.
package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/hostname"
)

// Kubectl deletes nodes by running `kubectl delete node`.
type Kubectl struct {
	// Runner runs kubectl.
	Runner command.Runner
	// BinDir holds the kubectl binary.
	BinDir string
	// Kubeconfig, when set, is passed to kubectl as --kubeconfig.
	Kubeconfig string
}

// ErrInvalidName means the node name could be read by kubectl as a flag.
var ErrInvalidName = errors.New("invalid node name")

// Delete removes the node named name. A node that does not exist counts as
// deleted, so the call is idempotent.
func (k *Kubectl) Delete(ctx context.Context, name string) error {
	// The handler validates names already; this is the last line of
	// defence against `--all`, which would empty the cluster.
	if !hostname.Valid(name) {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	var args []string
	if k.Kubeconfig != "" {
		args = append(args, "--kubeconfig", k.Kubeconfig)
	}
	// "--" ends the flags: whatever follows is a name, never an option.
	args = append(args, "delete", "node", "--ignore-not-found", "--", name)
	if _, err := k.Runner.Run(ctx, filepath.Join(k.BinDir, "kubectl"), args...); err != nil {
		return fmt.Errorf("kubectl delete node %s: %w", name, err)
	}
	return nil
}

// Name is the backend's name in logs and metrics: "kubectl".
func (*Kubectl) Name() string { return "kubectl" }
