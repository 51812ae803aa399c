package command

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/overload"
)

// ErrBusy means a run waited for a free slot until its deadline and never
// started: the server is saturated, and the caller may try again later. It
// wraps overload.Err, which the handler answers with 503.
var ErrBusy = overload.New("too many commands running")

// Limited runs at most a fixed number of programs at once. Runs beyond the
// limit wait for a free slot until it frees or their context ends: first
// the runs of requests already admitted (Admit), then the others, each in
// arrival order. So a request waits its turn once, at its first run; every
// later run of it goes before every request that arrived after it.
type Limited struct {
	runner Runner

	mu   sync.Mutex
	free int
	// waiters are the runs waiting for a slot, admitted requests' first.
	waiters [2]list.List // of chan struct{}, closed when granted
}

// NewLimited returns a Runner that passes at most max concurrent runs to r.
func NewLimited(r Runner, max int) *Limited {
	return &Limited{runner: r, free: max}
}

// minRun is the time a run keeps for itself: a request stops waiting for
// its first slot this long (or a quarter of its time, if less) before its
// deadline, rather than start a kubectl that would be killed half-way.
const minRun = 5 * time.Second

// heldKey marks a context whose request holds a slot of the Limited it
// points to.
type heldKey struct{}

// admissionKey marks a context whose request is admitted once one of its
// runs got a slot.
type admissionKey struct{}

// Admit returns ctx marked as one request's, unless it is already: the
// request's first run through a Limited waits in line, and may give up
// with ErrBusy; once it got a slot, the request is admitted, and its later
// runs wait only for runs already running, never behind requests not yet
// admitted, and never give up before their context ends.
func Admit(ctx context.Context) context.Context {
	if ctx.Value(admissionKey{}) != nil {
		return ctx
	}
	return context.WithValue(ctx, admissionKey{}, new(atomic.Bool))
}

// Admitted reports whether ctx's request (Admit) has been admitted.
func Admitted(ctx context.Context) bool {
	a, ok := ctx.Value(admissionKey{}).(*atomic.Bool)
	return ok && a.Load()
}

// MarkAdmitted admits ctx's request (Admit), for a caller that started a
// run on its behalf, e.g. one that creates for several requests at once.
func MarkAdmitted(ctx context.Context) {
	if a, ok := ctx.Value(admissionKey{}).(*atomic.Bool); ok {
		a.Store(true)
	}
}

// GiveUpAt returns when a request not yet admitted stops waiting for a
// slot: minRun (or a quarter of the time left) before ctx's deadline. ok is
// false when it never gives up: no deadline, or admitted already.
func GiveUpAt(ctx context.Context) (_ time.Time, ok bool) {
	deadline, ok := ctx.Deadline()
	if !ok || Admitted(ctx) {
		return time.Time{}, false
	}
	return deadline.Add(-min(minRun, time.Until(deadline)/4)), true
}

// Hold waits for a free slot, as Run does, and keeps it until release is
// called: runs through l with the returned context (or one derived from
// it) take no further slot and never wait. The runs of one holder must be
// sequential: they share the one slot. With ctx already holding a slot of
// l, Hold takes none.
func (l *Limited) Hold(ctx context.Context) (_ context.Context, release func(), _ error) {
	if ctx.Value(heldKey{}) == l {
		return ctx, func() {}, nil
	}
	if err := l.acquire(ctx); err != nil {
		return ctx, nil, err
	}
	metrics.CommandsRunning.Inc()
	var once sync.Once
	return context.WithValue(ctx, heldKey{}, l), func() {
		once.Do(func() {
			metrics.CommandsRunning.Dec()
			l.release()
		})
	}, nil
}

// Run runs path with args through the wrapped Runner, after waiting for a
// free slot unless ctx holds one (Hold). A run of a request not yet
// admitted that cannot get a slot early enough to finish before its
// context's deadline (GiveUpAt) returns an error wrapping ErrBusy.
func (l *Limited) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	return l.run(ctx, func(ctx context.Context) ([]byte, error) { return l.runner.Run(ctx, path, args...) })
}

// RunInput is Run with stdin on the program's standard input: it fails
// with ErrNoInput, before waiting for a slot, unless the wrapped Runner is
// an InputRunner.
func (l *Limited) RunInput(ctx context.Context, stdin []byte, path string, args ...string) ([]byte, error) {
	ir, ok := l.runner.(InputRunner)
	if !ok {
		return nil, fmt.Errorf("%s: %w: %T", path, ErrNoInput, l.runner)
	}
	return l.run(ctx, func(ctx context.Context) ([]byte, error) { return ir.RunInput(ctx, stdin, path, args...) })
}

// run calls do after waiting for a free slot unless ctx holds one.
func (l *Limited) run(ctx context.Context, do func(context.Context) ([]byte, error)) ([]byte, error) {
	if ctx.Value(heldKey{}) == l {
		return do(ctx)
	}
	if err := l.acquire(ctx); err != nil {
		return nil, err
	}
	defer l.release()
	metrics.CommandsRunning.Inc()
	defer metrics.CommandsRunning.Dec()
	return do(ctx)
}

// acquire waits for a free slot: in the first line when ctx's request is
// admitted, until ctx ends; otherwise in the second, until GiveUpAt. It
// admits ctx's request when it gets the slot.
func (l *Limited) acquire(ctx context.Context) error {
	start := time.Now()
	first := Admitted(ctx)
	waitCtx := ctx
	if giveUp, ok := GiveUpAt(ctx); ok {
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithDeadline(ctx, giveUp)
		defer cancel()
	}
	metrics.CommandQueueLength.Inc()
	err := l.wait(waitCtx, first)
	metrics.CommandQueueLength.Dec()
	metrics.CommandWaitSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return fmt.Errorf("%w: waited %s for a slot: %w", ErrBusy, time.Since(start).Round(time.Millisecond), err)
	}
	MarkAdmitted(ctx)
	return nil
}

// wait takes a slot, waiting in the first or second line until one frees
// or ctx ends.
func (l *Limited) wait(ctx context.Context, first bool) error {
	line := 1
	if first {
		line = 0
	}
	l.mu.Lock()
	if l.free > 0 && l.waiters[0].Len() == 0 && (line == 0 || l.waiters[1].Len() == 0) {
		l.free--
		l.mu.Unlock()
		return nil
	}
	granted := make(chan struct{})
	e := l.waiters[line].PushBack(granted)
	l.mu.Unlock()
	select {
	case <-granted:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		select {
		case <-granted: // granted meanwhile: give it back
			l.mu.Unlock()
			l.release()
		default:
			l.waiters[line].Remove(e)
			l.mu.Unlock()
		}
		return ctx.Err()
	}
}

// Waiting returns how many runs wait for a slot of l now (the
// epoxy_extensions_command_queue_length gauge counts those of every
// Limited of the process).
func (l *Limited) Waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.waiters[0].Len() + l.waiters[1].Len()
}

// release frees a slot, handing it to the first waiter if there is one.
func (l *Limited) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.waiters {
		if e := l.waiters[i].Front(); e != nil {
			l.waiters[i].Remove(e)
			close(e.Value.(chan struct{}))
			return
		}
	}
	l.free++
}
