// Package node removes machines from the Kubernetes cluster: Kubectl runs
// `kubectl delete node`, API deletes the Node through the Kubernetes API.
package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"

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

var (
	// ErrControlPlane means the Node is a control-plane Node.
	ErrControlPlane error = refused{"control-plane Nodes are never deleted", "control_plane_node"}
	// ErrNotOwnNode means a direct caller asked to delete a Node that does
	// not list the caller's address: another machine's.
	ErrNotOwnNode error = refused{"the caller's address is not the Node's", "not_own_node"}
)

// refused is an error the request itself causes, not the backend. Its
// RefusalReason tells the handler to answer 403, without importing this
// package.
type refused struct{ msg, reason string }

func (r refused) Error() string { return r.msg }

// RefusalReason names the refusal in logs and metrics.
func (r refused) RefusalReason() string { return r.reason }

// nodeTemplate prints, for each Node of a list, its name, "cp" when it has
// the control-plane label, and its addresses followed by commas; fields end
// with a unit separator, Nodes with a record separator.
const nodeTemplate = `{{range .items}}{{.metadata.name}}{{"\x1f"}}` +
	`{{range $k, $v := .metadata.labels}}{{if eq $k "` + ControlPlaneLabel + `"}}cp{{end}}{{end}}{{"\x1f"}}` +
	`{{range .status.addresses}}{{.address}},{{end}}{{"\x1e"}}{{end}}`

// Delete removes the node named name unless it is a control-plane Node
// (ErrControlPlane) or, when owner is valid, one whose addresses do not
// include owner (ErrNotOwnNode). A node that does not exist counts as
// deleted, so the call is idempotent.
//
// Without owner, one kubectl run deletes the Node only if it has no
// control-plane label (both selectors are evaluated by the API server);
// only when it deleted nothing does a second run tell a control-plane Node
// from a missing one. With owner, one run reads the Node first.
func (k *Kubectl) Delete(ctx context.Context, name string, owner netip.Addr) error {
	// The handler validates names already; this is the last line of
	// defence against `--all`, which would empty the cluster, and against
	// a selector injected through the name.
	if !hostname.Valid(name) {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	byName := "metadata.name=" + name
	if owner.IsValid() {
		out, err := k.kubectl(ctx, "get", "nodes", "--field-selector", byName, "--output", "go-template="+nodeTemplate)
		if err != nil {
			return fmt.Errorf("kubectl get node %s: %w", name, err)
		}
		rec, _, _ := strings.Cut(string(out), "\x1e")
		if rec == "" {
			return nil // no such Node
		}
		f := strings.Split(rec, "\x1f")
		if len(f) != 3 || f[0] != name {
			return fmt.Errorf("kubectl get node %s: unexpected output %.200q", name, out)
		}
		if f[1] != "" {
			return fmt.Errorf("node %s: %w", name, ErrControlPlane)
		}
		if !hasAddress(strings.Split(f[2], ","), owner) {
			return fmt.Errorf("node %s, caller %s: %w", name, owner, ErrNotOwnNode)
		}
	}
	out, err := k.kubectl(ctx, "delete", "node", "--selector", "!"+ControlPlaneLabel, "--field-selector", byName)
	if err != nil {
		return fmt.Errorf("kubectl delete node %s: %w", name, err)
	}
	if bytes.Contains(out, []byte("deleted")) || owner.IsValid() {
		return nil
	}
	out, err = k.kubectl(ctx, "get", "node", "--selector", ControlPlaneLabel, "--field-selector", byName, "--output", "name")
	if err != nil {
		return fmt.Errorf("kubectl get node %s: %w", name, err)
	}
	if len(bytes.TrimSpace(out)) != 0 {
		return fmt.Errorf("node %s: %w", name, ErrControlPlane)
	}
	return nil // no such Node
}

// hasAddress reports whether one of addrs (as a Node's status lists them)
// is owner, an IPv4-mapped IPv6 address counting as its IPv4 address.
func hasAddress(addrs []string, owner netip.Addr) bool {
	return slices.ContainsFunc(addrs, func(s string) bool {
		a, err := netip.ParseAddr(s)
		return err == nil && a.Unmap() == owner.Unmap()
	})
}

func (k *Kubectl) kubectl(ctx context.Context, args ...string) ([]byte, error) {
	if k.Kubeconfig != "" {
		args = append([]string{"--kubeconfig", k.Kubeconfig}, args...)
	}
	return k.Runner.Run(ctx, filepath.Join(k.BinDir, "kubectl"), args...)
}

// Name is the backend's name in logs and metrics: "kubectl".
func (*Kubectl) Name() string { return "kubectl" }
