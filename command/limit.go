package command

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/semaphore"
)

// ErrBusy means a run waited for a free slot until its deadline and never
// started: the server is saturated, and the caller may try again later.
var ErrBusy = errors.New("too many commands running")

var (
	queueLength = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "epoxy_extensions_command_queue_length",
		Help: "Commands waiting for a free slot.",
	})
	running = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "epoxy_extensions_commands_running",
		Help: "Commands running now.",
	})
	waitSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "epoxy_extensions_command_wait_seconds",
		Help:    "Time commands waited for a free slot, including those that gave up.",
		Buckets: []float64{0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120},
	})
)

// Runner runs a program and returns its stdout.
type Runner interface {
	Run(ctx context.Context, path string, args ...string) ([]byte, error)
}

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

// Run waits for a free slot, then runs path with args through the wrapped
// Runner. A run that cannot get a slot early enough to finish before its
// context's deadline returns an error wrapping ErrBusy.
func (l *Limited) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	start := time.Now()
	waitCtx := ctx
	if deadline, ok := ctx.Deadline(); ok {
		reserve := min(minRun, time.Until(deadline)/4)
		var cancel context.CancelFunc
		waitCtx, cancel = context.WithDeadline(ctx, deadline.Add(-reserve))
		defer cancel()
	}
	queueLength.Inc()
	err := l.sem.Acquire(waitCtx, 1)
	queueLength.Dec()
	waitSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("%w: waited %s for a slot: %w", ErrBusy, time.Since(start).Round(time.Millisecond), err)
	}
	defer l.sem.Release(1)
	running.Inc()
	defer running.Dec()
	return l.runner.Run(ctx, path, args...)
}
