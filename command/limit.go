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

// Run waits for a free slot, then runs path with args through the wrapped
// Runner. A run whose context ends while it waits returns an error wrapping
// ErrBusy and the context's error.
func (l *Limited) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	start := time.Now()
	queueLength.Inc()
	err := l.sem.Acquire(ctx, 1)
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
