package command

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/overload"
)

// ErrBusy means a run waited for a free slot until its deadline and never
// started: the server is saturated, and the caller may try again later. It
// wraps overload.Err, which the handler answers with 503.
var ErrBusy = overload.New("too many commands running")

// Limited runs at most a fixed number of programs at once. Runs beyond the
// limit wait in arrival order until a slot frees or their context ends.
type Limited struct {
	runner Runner
	sem    *semaphore.Weighted
}

// NewLimited returns a Runner that passes at most max concurrent runs to r.
func NewLimited(r Runner, max int) *Limited {
	return &Limited{runner: r, sem: semaphore.NewWeighted(int64(max))}
}

// minRun is the time a run keeps for itself: a request stops waiting for a
// slot this long (or a quarter of its time, if less) before its deadline,
// rather than start a kubeadm that would be killed half-way.
const minRun = 5 * time.Second

// heldKey marks a context whose request holds a slot of the Limited it
// points to.
type heldKey struct{}

// Hold waits for a free slot, as Run does, and keeps it for a whole request
// until release is called: runs through l with the returned context (or one
// derived from it) take no further slot and never wait, so that a request
// that was admitted is not shed half-way between its programs. The runs of
// one request must be sequential: they share the one slot. With ctx already
// holding a slot of l, Hold takes none.
func (l *Limited) Hold(ctx context.Context) (_ context.Context, release func(), _ error) {
	if ctx.Value(heldKey{}) == l {
		return ctx, func() {}, nil
	}
	if err := l.acquire(ctx); err != nil {
		return ctx, nil, err
	}
	metrics.CommandsRunning.Inc()
	return context.WithValue(ctx, heldKey{}, l), func() {
		metrics.CommandsRunning.Dec()
		l.sem.Release(1)
	}, nil
}

// Run runs path with args through the wrapped Runner, after waiting for a
// free slot unless ctx holds one (Hold). A run that cannot get a slot early
// enough to finish before its context's deadline returns an error wrapping
// ErrBusy.
func (l *Limited) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	if ctx.Value(heldKey{}) == l {
		return l.runner.Run(ctx, path, args...)
	}
	if err := l.acquire(ctx); err != nil {
		return nil, err
	}
	defer l.sem.Release(1)
	metrics.CommandsRunning.Inc()
	defer metrics.CommandsRunning.Dec()
	return l.runner.Run(ctx, path, args...)
}

// acquire waits for a free slot until minRun (or a quarter of the time
// left) before ctx's deadline.
func (l *Limited) acquire(ctx context.Context) error {
	start := time.Now()
	waitCtx := ctx
	if deadline, ok := ctx.Deadline(); ok {
		reserve := min(minRun, time.Until(deadline)/4)
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithDeadline(ctx, deadline.Add(-reserve))
		defer cancel()
	}
	metrics.CommandQueueLength.Inc()
	err := l.sem.Acquire(waitCtx, 1)
	metrics.CommandQueueLength.Dec()
	metrics.CommandWaitSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return fmt.Errorf("%w: waited %s for a slot: %w", ErrBusy, time.Since(start).Round(time.Millisecond), err)
	}
	return nil
}
