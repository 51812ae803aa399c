// Package nodewatch keeps a watch-fed view of the cluster's Nodes for the
// api backend, and acts on it: Watcher answers which Node has a name
// without an API request (the node backend's ownership check reads it), and
// RevokeOnReady revokes a host's join tokens once its Node is Ready.
package nodewatch

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/m-lab/epoxy-extensions/node"
)

// NodeClient lists and watches Nodes: client-go's NodeInterface has these
// methods.
type NodeClient interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.NodeList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// Watcher is one shared Node informer that keeps of each Node only what
// the server reads: name, UID, resource version, the control-plane label,
// status.addresses and the Ready condition (slimNode), not whole Nodes.
// It is safe for concurrent use.
type Watcher struct {
	inf cache.SharedIndexInformer
}

// New returns a Watcher of the Nodes nodes lists and watches. It fills
// once Run runs. nodes should come from a client for watches
// (kube.WatchClient): a per-request timeout would cut the watch every time
// it elapses.
func New(nodes NodeClient) *Watcher {
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return nodes.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return nodes.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &corev1.Node{}, 0, cache.Indexers{})
	// Cannot fail before the informer runs.
	_ = inf.SetTransform(slimNode)
	return &Watcher{inf: inf}
}

// Run lists and watches Nodes until ctx ends.
func (w *Watcher) Run(ctx context.Context) { w.inf.RunWithContext(ctx) }

// Synced reports whether the first list has filled the Watcher.
func (w *Watcher) Synced() bool { return w.inf.HasSynced() }

// Node returns the Watcher's copy of the Node named name (see Watcher for
// what it keeps), and false when it has none or has not been filled yet:
// then only the API server knows. The copy must not be modified.
func (w *Watcher) Node(name string) (*corev1.Node, bool) {
	if !w.inf.HasSynced() {
		return nil, false
	}
	obj, ok, err := w.inf.GetStore().GetByKey(name)
	if err != nil || !ok {
		return nil, false
	}
	n, ok := obj.(*corev1.Node)
	return n, ok
}

// slimNode is the informer's transform: it keeps of a Node only what
// Watcher says. Anything else (a deletion marker) passes unchanged.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}}
	if v, ok := n.Labels[node.ControlPlaneLabel]; ok {
		slim.Labels = map[string]string{node.ControlPlaneLabel: v}
	}
	for _, a := range n.Status.Addresses {
		slim.Status.Addresses = append(slim.Status.Addresses, corev1.NodeAddress{Type: a.Type, Address: a.Address})
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			slim.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status, LastTransitionTime: c.LastTransitionTime}}
			break
		}
	}
	return slim, nil
}
