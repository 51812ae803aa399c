package nodewatch

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// node returns a Node named name whose Ready condition has status and
// turned so at since; status "" means no Ready condition at all.
func nodeNamed(name string, status corev1.ConditionStatus, since time.Time) *corev1.Node {
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
		{name: "ready recently", nodes: []*corev1.Node{nodeNamed("a", corev1.ConditionTrue, now.Add(-time.Second))}, queued: []string{"a"}},
		{name: "not ready", nodes: []*corev1.Node{nodeNamed("a", corev1.ConditionFalse, now)}},
		{name: "unknown", nodes: []*corev1.Node{nodeNamed("a", corev1.ConditionUnknown, now)}},
		{name: "no Ready condition", nodes: []*corev1.Node{nodeNamed("a", "", now)}},
		{name: "ready before any live token", nodes: []*corev1.Node{nodeNamed("a", corev1.ConditionTrue, now.Add(-10*time.Minute))}},
		{name: "many updates, one queued", nodes: []*corev1.Node{
			nodeNamed("a", corev1.ConditionTrue, now), nodeNamed("a", corev1.ConditionTrue, now), nodeNamed("a", corev1.ConditionTrue, now)}, queued: []string{"a"}},
		{name: "transition handled already", nodes: []*corev1.Node{nodeNamed("a", corev1.ConditionTrue, now)},
			done: map[string]time.Time{"a": now}},
		{name: "a new transition", nodes: []*corev1.Node{nodeNamed("a", corev1.ConditionTrue, now)},
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

// fakeRevoker records each revocation asked of it.
type fakeRevoker struct {
	calls []string // host@notAfter
	err   error
}

func (f *fakeRevoker) Revoke(_ context.Context, host string, notAfter time.Time) (int, error) {
	f.calls = append(f.calls, host+"@"+notAfter.UTC().Format(time.RFC3339))
	return 1, f.err
}

// TestReadyRevokerRevoke checks that a Ready Node revokes its host's tokens
// made before it turned Ready, that the transition is then remembered, that
// a failed revocation is tried again on the next update, and that a
// NotReady Node revokes nothing.
func TestReadyRevokerRevoke(t *testing.T) {
	readySince := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		node      *corev1.Node
		err       error
		wantCalls []string
		wantDone  bool
	}{
		{name: "ready", node: nodeNamed("a", corev1.ConditionTrue, readySince),
			wantCalls: []string{"a@2026-11-30T10:00:00Z"}, wantDone: true},
		{name: "revocation failed: not done", node: nodeNamed("a", corev1.ConditionTrue, readySince), err: errors.New("API down"),
			wantCalls: []string{"a@2026-11-30T10:00:00Z"}},
		{name: "not ready", node: nodeNamed("a", corev1.ConditionFalse, readySince)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeRevoker{err: tc.err}
			r := &readyRevoker{tokens: f, ttl: 5 * time.Minute, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				queue: make(chan string, 1), done: map[string]time.Time{}}
			r.revoke(context.Background(), tc.node)
			if !slices.Equal(f.calls, tc.wantCalls) {
				t.Errorf("Revoke calls = %q, want %q", f.calls, tc.wantCalls)
			}
			if done := r.done["a"].Equal(readySince); done != tc.wantDone {
				t.Errorf("transition remembered as handled: %t, want %t", done, tc.wantDone)
			}
		})
	}
}
