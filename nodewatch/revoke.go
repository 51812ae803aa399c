package nodewatch

import (
	"context"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/m-lab/epoxy-extensions/metrics"
)

// ReadySince returns when n's Ready condition last turned True, and false
// when n is not Ready.
func ReadySince(n *corev1.Node) (time.Time, bool) {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.LastTransitionTime.Time, c.Status == corev1.ConditionTrue
		}
	}
	return time.Time{}, false
}

// revokeTimeout bounds the revocation of one host's tokens.
const revokeTimeout = 10 * time.Second

// Revoker revokes a host's join tokens made before notAfter and returns
// how many it revoked: token.Slots does.
type Revoker interface {
	Revoke(ctx context.Context, host string, notAfter time.Time) (int, error)
}

// RevokeOnReady runs until ctx ends, and when a Node becomes Ready, has
// tokens revoke its host's join tokens created before that (the Node's
// name is the hostname the tokens were asked for): the kubelet now holds
// its own certificate, and the token has done its job. A token made while
// the Node is NotReady (a machine that rebooted, whose Node stayed) lives
// until the Node is Ready again. Transitions older than ttl are ignored:
// every token made before them has expired. The Watcher must Run too.
func (w *Watcher) RevokeOnReady(ctx context.Context, tokens Revoker, ttl time.Duration, log *slog.Logger) {
	r := &readyRevoker{tokens: tokens, ttl: ttl, log: log, queue: make(chan string, 4096), done: map[string]time.Time{}}
	enqueue := func(obj any) {
		if n, ok := obj.(*corev1.Node); ok {
			r.offer(n)
		}
	}
	reg, err := w.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { enqueue(obj) },
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: func(obj any) {
			if n, ok := obj.(*corev1.Node); ok {
				r.forget(n.Name)
			}
		},
	})
	if err != nil { // only once the informer has stopped: ctx is done
		log.Warn("not revoking the tokens of Ready nodes", "error", err)
		return
	}
	defer w.inf.RemoveEventHandler(reg)
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-r.queue:
			obj, exists, err := w.inf.GetStore().GetByKey(name)
			if err != nil || !exists {
				r.forget(name)
				continue
			}
			r.revoke(ctx, obj.(*corev1.Node))
		}
	}
}

// readyRevoker decides which Node events call for a revocation, and makes
// each transition to Ready cost one look at the host's slots.
type readyRevoker struct {
	tokens Revoker
	ttl    time.Duration
	log    *slog.Logger
	queue  chan string

	mu      sync.Mutex
	done    map[string]time.Time // node → the Ready transition already handled
	pending map[string]bool
}

// offer queues n if it became Ready recently and that was not handled yet.
func (r *readyRevoker) offer(n *corev1.Node) {
	since, ready := ReadySince(n)
	if !ready || time.Since(since) > r.ttl {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending = map[string]bool{}
	}
	if r.done[n.Name].Equal(since) || r.pending[n.Name] {
		return
	}
	select {
	case r.queue <- n.Name:
		r.pending[n.Name] = true
	default:
		r.log.Warn("revocation queue full; a Ready node's tokens will expire on their own", "host", n.Name)
	}
}

func (r *readyRevoker) forget(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.done, name)
	delete(r.pending, name)
}

// revoke deletes the tokens of n's host made before n became Ready.
func (r *readyRevoker) revoke(ctx context.Context, n *corev1.Node) {
	since, ready := ReadySince(n)
	r.mu.Lock()
	delete(r.pending, n.Name)
	r.mu.Unlock()
	if !ready {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, revokeTimeout)
	defer cancel()
	count, err := r.tokens.Revoke(ctx, n.Name, since)
	if count > 0 {
		metrics.TokensRevoked.WithLabelValues("node_ready").Add(float64(count))
		r.log.Info("join tokens revoked", "host", n.Name, "tokens", count, "why", "node_ready", "ready_since", since.UTC().Format(time.RFC3339))
	}
	if err != nil {
		r.log.Warn("could not revoke the join tokens of a Ready node", "host", n.Name, "error", err)
		return // the next update of the Node tries again
	}
	r.mu.Lock()
	r.done[n.Name] = since
	r.mu.Unlock()
}
