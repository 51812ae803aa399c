package node

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/kube"
)

// Remover deletes a Node by name: client-go's NodeInterface has this method.
type Remover interface {
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// API deletes nodes through the Kubernetes API.
type API struct {
	// Nodes deletes Node objects.
	Nodes Remover
	// Timeout bounds one Delete, retries included.
	Timeout time.Duration
}

// Delete removes the Node named name. A node that does not exist counts as
// deleted, as with `kubectl delete node --ignore-not-found`.
func (a *API) Delete(ctx context.Context, name string) error {
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
	err := kube.Call(ctx, "delete_node", func(ctx context.Context) error {
		return a.Nodes.Delete(ctx, name, metav1.DeleteOptions{})
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting node %s: %w", name, err)
	}
	return nil
}

// Name is the backend's name in logs and metrics: "kube_api".
func (*API) Name() string { return "kube_api" }
