// Package node removes machines from the Kubernetes cluster: Kubectl runs
// `kubectl delete node`, API deletes the Node through the Kubernetes API.
package node

import (
	"bytes"
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

// ControlPlaneLabel marks the Nodes of the control plane, which this server
// never deletes.
const ControlPlaneLabel = "node-role.kubernetes.io/control-plane"

// ErrControlPlane means the Node is a control-plane Node. Its Forbidden
// method tells the handler to answer 403 without importing this package.
var ErrControlPlane error = refused("control-plane Nodes are never deleted")

// refused is an error the request itself causes, not the backend.
type refused string

func (r refused) Error() string { return string(r) }

// Forbidden marks the request as one the server refuses: 403.
func (refused) Forbidden() bool { return true }

// Delete removes the node named name unless it is a control-plane Node. A
// node that does not exist counts as deleted, so the call is idempotent.
//
// One kubectl run deletes the Node only if it has no control-plane label
// (both selectors are evaluated by the API server); only when it deleted
// nothing does a second run tell a control-plane Node (ErrControlPlane)
// from a missing one.
func (k *Kubectl) Delete(ctx context.Context, name string) error {
	// The handler validates names already; this is the last line of
	// defence against `--all`, which would empty the cluster, and against
	// a selector injected through the name.
	if !hostname.Valid(name) {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	out, err := k.kubectl(ctx, "delete", "node", "--selector", "!"+ControlPlaneLabel,
		"--field-selector", "metadata.name="+name)
	if err != nil {
		return fmt.Errorf("kubectl delete node %s: %w", name, err)
	}
	if bytes.Contains(out, []byte("deleted")) {
		return nil
	}
	out, err = k.kubectl(ctx, "get", "node", "--selector", ControlPlaneLabel,
		"--field-selector", "metadata.name="+name, "--output", "name")
	if err != nil {
		return fmt.Errorf("kubectl get node %s: %w", name, err)
	}
	if len(bytes.TrimSpace(out)) != 0 {
		return fmt.Errorf("node %s: %w", name, ErrControlPlane)
	}
	return nil // no such Node
}

func (k *Kubectl) kubectl(ctx context.Context, args ...string) ([]byte, error) {
	if k.Kubeconfig != "" {
		args = append([]string{"--kubeconfig", k.Kubeconfig}, args...)
	}
	return k.Runner.Run(ctx, filepath.Join(k.BinDir, "kubectl"), args...)
}

// Name is the backend's name in logs and metrics: "kubectl".
func (*Kubectl) Name() string { return "kubectl" }
