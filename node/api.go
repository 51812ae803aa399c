package node

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/kube"
)

// Remover reads and deletes Nodes by name: client-go's NodeInterface has
// these methods.
type Remover interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// API deletes nodes through the Kubernetes API.
type API struct {
	// Nodes deletes Node objects.
	Nodes Remover
	// Timeout bounds one Delete, retries included.
	Timeout time.Duration
}

// Delete removes the Node named name unless it is a control-plane Node
// (ErrControlPlane) or, when owner is valid, one whose status.addresses do
// not include owner (ErrNotOwnNode). A node that does not exist counts as
// deleted, as with `kubectl delete node --ignore-not-found`. The delete is
// conditional on the UID read: a Node replaced in between is not deleted.
func (a *API) Delete(ctx context.Context, name string, owner netip.Addr) error {
	// The handler validates names already; an empty one would address
	// the collection.
	if !hostname.Valid(name) {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	if a.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.Timeout)
		defer cancel()
	}
	var n *corev1.Node
	err := kube.Call(ctx, "get_node", func(ctx context.Context) error {
		var err error
		n, err = a.Nodes.Get(ctx, name, metav1.GetOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading node %s: %w", name, err)
	}
	if _, ok := n.Labels[ControlPlaneLabel]; ok {
		return fmt.Errorf("node %s: %w", name, ErrControlPlane)
	}
	var addrs []string
	for _, a := range n.Status.Addresses {
		addrs = append(addrs, a.Address)
	}
	if owner.IsValid() && !hasAddress(addrs, owner) {
		return fmt.Errorf("node %s, caller %s: %w", name, owner, ErrNotOwnNode)
	}
	uid := n.UID
	err = kube.Call(ctx, "delete_node", func(ctx context.Context) error {
		return a.Nodes.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting node %s: %w", name, err)
	}
	return nil
}

// Name is the backend's name in logs and metrics: "kube_api".
func (*API) Name() string { return "kube_api" }
