package node

import (
	"context"
	"errors"
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

// Cache answers what a watch-fed copy knows of a Node: nodewatch.Watcher
// does. The Node it returns holds at least the name, UID, labels and
// status.addresses; false means it knows nothing (not filled yet, or no
// such Node as far as it has seen).
type Cache interface {
	Node(name string) (*corev1.Node, bool)
}

// API deletes nodes through the Kubernetes API.
type API struct {
	// Nodes deletes Node objects.
	Nodes Remover
	// Cache, when set, is read instead of the API server for the checks
	// before a delete: the caller's own Node then costs one API request,
	// the delete. A Node it does not know, or would refuse, is read from
	// the API server, which has the last word.
	Cache Cache
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
	if a.Cache != nil {
		if n, ok := a.Cache.Node(name); ok {
			err := a.deleteChecked(ctx, n, owner)
			if !apierrors.IsConflict(err) && !errors.Is(err, ErrNotOwnNode) && !errors.Is(err, ErrControlPlane) {
				return err
			}
			// Replaced since the watch saw it, or refused on what the
			// watch saw, which may lag (a Node whose addresses its kubelet
			// just reported): the API server judges.
		}
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
	err = a.deleteChecked(ctx, n, owner)
	if apierrors.IsConflict(err) {
		return fmt.Errorf("deleting node %s: replaced meanwhile: %w", name, err)
	}
	return err
}

// deleteChecked deletes n unless it is a control-plane Node or, when owner
// is valid, not the caller's own; the delete is conditional on n's UID,
// and a Conflict error means the Node was replaced since n was read.
func (a *API) deleteChecked(ctx context.Context, n *corev1.Node, owner netip.Addr) error {
	name := n.Name
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
	err := kube.Call(ctx, "delete_node", func(ctx context.Context) error {
		return a.Nodes.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	})
	if apierrors.IsConflict(err) {
		return err
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting node %s: %w", name, err)
	}
	return nil
}

// Name is the backend's name in logs and metrics: "kube_api".
func (*API) Name() string { return "kube_api" }
