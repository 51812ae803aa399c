package nodewatch

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/m-lab/epoxy-extensions/node"
)

// TestSlimNode checks that the informer keeps only the name, UID, the
// control-plane label, the addresses and the Ready condition with its time,
// and that revocation reads the same from it.
func TestSlimNode(t *testing.T) {
	since := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name         string
		labels       map[string]string
		controlPlane bool
	}{
		{name: "worker", labels: map[string]string{"big": "label"}},
		{name: "control plane", labels: map[string]string{"big": "label", node.ControlPlaneLabel: ""}, controlPlane: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := nodeNamed("a", corev1.ConditionTrue, since)
			n.UID = "uid-a"
			n.Labels = tc.labels
			n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.4"}}
			n.Status.Images = []corev1.ContainerImage{{Names: []string{"registry/image"}, SizeBytes: 1 << 30}}
			obj, err := slimNode(n)
			if err != nil {
				t.Fatal(err)
			}
			slim := obj.(*corev1.Node)
			if slim.Name != "a" || slim.UID != "uid-a" || len(slim.Status.Images) != 0 || len(slim.Status.Conditions) != 1 {
				t.Errorf("slim Node = %+v, want only the name, UID, addresses and the Ready condition", slim)
			}
			if _, cp := slim.Labels[node.ControlPlaneLabel]; cp != tc.controlPlane || len(slim.Labels) > 1 {
				t.Errorf("slim labels = %v, want only the control-plane label (%t)", slim.Labels, tc.controlPlane)
			}
			if len(slim.Status.Addresses) != 1 || slim.Status.Addresses[0].Address != "10.0.0.4" {
				t.Errorf("slim addresses = %v, want 10.0.0.4", slim.Status.Addresses)
			}
			if got, ready := ReadySince(slim); !ready || !got.Equal(since) {
				t.Errorf("ReadySince(slim) = %s, %t; want %s, true", got, ready, since)
			}
		})
	}
	if obj, _ := slimNode("tombstone"); obj != "tombstone" {
		t.Errorf("slimNode changed a non-Node")
	}
}

// TestWatcherNode checks that the Watcher answers nothing before its first
// list, then follows the Nodes the API server adds, changes and deletes.
func TestWatcherNode(t *testing.T) {
	a := nodeNamed("a", corev1.ConditionTrue, time.Now())
	a.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.4"}}
	cs := fake.NewClientset(a)
	w := New(cs.CoreV1().Nodes())
	if _, ok := w.Node("a"); ok {
		t.Fatal("Node answered before the Watcher ran")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	waitFor(t, func() bool { _, ok := w.Node("a"); return ok })
	if n, _ := w.Node("a"); n.Status.Addresses[0].Address != "10.0.0.4" {
		t.Errorf("Node(a) addresses = %v", n.Status.Addresses)
	}
	b := nodeNamed("b", corev1.ConditionFalse, time.Now())
	if _, err := cs.CoreV1().Nodes().Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := w.Node("b"); return ok })
	if err := cs.CoreV1().Nodes().Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := w.Node("a"); return !ok })
}

// TestRevokeOnReady runs the controller over a fake API server: a Node
// that turns Ready has its host's tokens revoked, once.
func TestRevokeOnReady(t *testing.T) {
	cs := fake.NewClientset(nodeNamed("a", corev1.ConditionFalse, time.Now()))
	w := New(cs.CoreV1().Nodes())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	calls := make(chan string, 10)
	go w.RevokeOnReady(ctx, revokerFunc(func(host string) { calls <- host }), 5*time.Minute, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ready := nodeNamed("a", corev1.ConditionTrue, time.Now())
	ready.ResourceVersion = "2"
	if _, err := cs.CoreV1().Nodes().Update(ctx, ready, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case host := <-calls:
		if host != "a" {
			t.Errorf("revoked %q, want a", host)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no revocation after the Node turned Ready")
	}
}

type revokerFunc func(host string)

func (f revokerFunc) Revoke(_ context.Context, host string, _ time.Time) (int, error) {
	f(host)
	return 1, nil
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
	}
}
