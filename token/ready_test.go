package token

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// node returns a Node named name whose Ready condition has status and
// turned so at since; status "" means no Ready condition at all.
func node(name string, status corev1.ConditionStatus, since time.Time) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if status != "" {
		n.Status.Conditions = []corev1.NodeCondition{
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse},
			{Type: corev1.NodeReady, Status: status, LastTransitionTime: metav1.NewTime(since)},
		}
	}
	return n
}

func TestReadyRevokerOffer(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		nodes  []*corev1.Node
		done   map[string]time.Time
		queued []string
	}{
		{name: "ready recently", nodes: []*corev1.Node{node("a", corev1.ConditionTrue, now.Add(-time.Second))}, queued: []string{"a"}},
		{name: "not ready", nodes: []*corev1.Node{node("a", corev1.ConditionFalse, now)}},
		{name: "unknown", nodes: []*corev1.Node{node("a", corev1.ConditionUnknown, now)}},
		{name: "no Ready condition", nodes: []*corev1.Node{node("a", "", now)}},
		{name: "ready before any live token", nodes: []*corev1.Node{node("a", corev1.ConditionTrue, now.Add(-10*time.Minute))}},
		{name: "many updates, one queued", nodes: []*corev1.Node{
			node("a", corev1.ConditionTrue, now), node("a", corev1.ConditionTrue, now), node("a", corev1.ConditionTrue, now)}, queued: []string{"a"}},
		{name: "transition handled already", nodes: []*corev1.Node{node("a", corev1.ConditionTrue, now)},
			done: map[string]time.Time{"a": now}},
		{name: "a new transition", nodes: []*corev1.Node{node("a", corev1.ConditionTrue, now)},
			done: map[string]time.Time{"a": now.Add(-time.Minute)}, queued: []string{"a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &readyRevoker{ttl: 5 * time.Minute, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				queue: make(chan string, 10), done: map[string]time.Time{}}
			for k, v := range tc.done {
				r.done[k] = v
			}
			for _, n := range tc.nodes {
				r.offer(n)
			}
			close(r.queue)
			var got []string
			for name := range r.queue {
				got = append(got, name)
			}
			if len(got) != len(tc.queued) || (len(got) > 0 && got[0] != tc.queued[0]) {
				t.Errorf("queued %q, want %q", got, tc.queued)
			}
		})
	}
}

// TestReadyRevokerRevoke checks that a Ready Node revokes its host's tokens
// made before it turned Ready, not those made after, nor another host's.
func TestReadyRevokerRevoke(t *testing.T) {
	s, f := newSlots(3)
	f.put(SlotID(slotHost, 0), "aaaaaaaaaaaaaaaa", Description(slotHost), clock.Add(time.Minute))   // made a minute ago
	f.put(SlotID(otherHost, 0), "bbbbbbbbbbbbbbbb", Description(otherHost), clock.Add(time.Minute)) // another host's
	if _, err := s.Create(context.Background(), slotHost); err != nil {                             // made now, in slot 1
		t.Fatal(err)
	}
	r := &readyRevoker{slots: s, ttl: 5 * time.Minute, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		queue: make(chan string, 1), done: map[string]time.Time{}}
	readySince := clock.Add(-30 * time.Second)
	r.revoke(context.Background(), node(slotHost, corev1.ConditionTrue, readySince))
	if f.secret(SlotID(slotHost, 0)) != nil {
		t.Errorf("the token made before the Node turned Ready is still there")
	}
	if f.secret(SlotID(slotHost, 1)) == nil {
		t.Errorf("the token made after the Node turned Ready was revoked")
	}
	if f.secret(SlotID(otherHost, 0)) == nil {
		t.Errorf("another host's token was revoked")
	}
	if !r.done[slotHost].Equal(readySince) {
		t.Errorf("the transition was not remembered as handled")
	}
	// A NotReady Node revokes nothing.
	r.revoke(context.Background(), node(slotHost, corev1.ConditionFalse, clock))
	if f.secret(SlotID(slotHost, 1)) == nil {
		t.Errorf("a NotReady Node revoked its host's token")
	}
}

// TestSlimNode checks that the Node informer keeps only the name and the
// Ready condition with its time, and that revocation reads the same from it.
func TestSlimNode(t *testing.T) {
	since := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	n := node("a", corev1.ConditionTrue, since)
	n.Labels = map[string]string{"big": "label"}
	n.Status.Images = []corev1.ContainerImage{{Names: []string{"registry/image"}, SizeBytes: 1 << 30}}
	obj, err := slimNode(n)
	if err != nil {
		t.Fatal(err)
	}
	slim := obj.(*corev1.Node)
	if slim.Name != "a" || len(slim.Labels) != 0 || len(slim.Status.Images) != 0 || len(slim.Status.Conditions) != 1 {
		t.Errorf("slim Node = %+v, want only the name and the Ready condition", slim)
	}
	if got, ready := ReadySince(slim); !ready || !got.Equal(since) {
		t.Errorf("ReadySince(slim) = %s, %t; want %s, true", got, ready, since)
	}
	if obj, _ := slimNode("tombstone"); obj != "tombstone" {
		t.Errorf("slimNode changed a non-Node")
	}
}
