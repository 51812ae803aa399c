package command

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/m-lab/epoxy-extensions/metrics"
)

// gatedRunner counts concurrent runs and blocks each until release closes.
type gatedRunner struct {
	release chan struct{}
	running atomic.Int32
	peak    atomic.Int32
	mu      sync.Mutex
	order   []string
}

var _ Runner = (*gatedRunner)(nil)

func (g *gatedRunner) Run(ctx context.Context, path string, args ...string) ([]byte, error) {
	n := g.running.Add(1)
	defer g.running.Add(-1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	g.mu.Lock()
	g.order = append(g.order, path)
	g.mu.Unlock()
	<-g.release
	return []byte(path), nil
}

func TestLimitedBoundsConcurrency(t *testing.T) {
	g := &gatedRunner{release: make(chan struct{})}
	l := NewLimited(g, 3)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := l.Run(context.Background(), "p"); err != nil {
				t.Errorf("Run() error = %v", err)
			}
		}()
	}
	waitFor(t, func() bool { return g.running.Load() == 3 })
	close(g.release)
	wg.Wait()
	if p := g.peak.Load(); p != 3 {
		t.Errorf("peak concurrent runs = %d, want 3", p)
	}
}

func TestLimitedServesInArrivalOrder(t *testing.T) {
	g := &gatedRunner{release: make(chan struct{})}
	l := NewLimited(g, 1)
	var wg sync.WaitGroup
	names := []string{"first", "second", "third", "fourth"}
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Run(context.Background(), name)
		}()
		// Let each one take its place before the next arrives: the first
		// runs, the others queue.
		waitFor(t, func() bool { return int(g.running.Load())+int(testutil.ToFloat64(metrics.CommandQueueLength)) == i+1 })
	}
	close(g.release)
	wg.Wait()
	for i, got := range g.order {
		if got != names[i] {
			t.Fatalf("run order = %v, want %v", g.order, names)
		}
	}
}

func TestLimitedBusyBeforeDeadline(t *testing.T) {
	g := &gatedRunner{release: make(chan struct{})}
	l := NewLimited(g, 1)
	go l.Run(context.Background(), "holder")
	waitFor(t, func() bool { return g.running.Load() == 1 })
	defer close(g.release)

	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := l.Run(ctx, "waiter")
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Run() error = %v, want ErrBusy", err)
	}
	// It gives up a quarter of its time early, so a run is never started
	// that its deadline would kill.
	if ctx.Err() != nil {
		t.Errorf("gave up after %s, at or after the deadline; want before it", time.Since(start))
	}
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5 s")
		}
	}
}

// TestLimitedHold checks that a request holding a slot runs any number of
// programs without waiting again, while others wait for the slot, and that
// a wait that would end too late says overload.
func TestLimitedHold(t *testing.T) {
	g := &gatedRunner{release: make(chan struct{})}
	close(g.release) // runs return at once
	l := NewLimited(g, 1)
	ctx, release, err := l.Hold(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := l.Run(ctx, "mine"); err != nil {
			t.Fatalf("a run of the holder: %v", err)
		}
	}
	if again, rel2, err := l.Hold(ctx); err != nil || again != ctx {
		t.Fatalf("Hold() within a held context = %v, %v: want the same context at once", again, err)
	} else {
		rel2() // gives nothing back: the slot is still the outer holder's
	}
	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := l.Run(short, "other"); !errors.Is(err, ErrBusy) {
		t.Errorf("another request's run while the slot is held: error %v, want ErrBusy", err)
	}
	release()
	if _, err := l.Run(context.Background(), "other"); err != nil {
		t.Errorf("a run after release: %v", err)
	}
}
