package main

import (
	"context"
	"sync"
	"time"
)

// cachedCheck runs a readiness check at most once per MaxAge and answers
// from its last result in between, so that probes cost nothing and a slow
// backend cannot pile them up: concurrent callers wait for one run.
type cachedCheck struct {
	// Check reports whether the backends can serve; it is given Timeout.
	Check   func(ctx context.Context) error
	MaxAge  time.Duration
	Timeout time.Duration

	mu  sync.Mutex
	at  time.Time // when err was found; zero before the first run
	err error
}

// Err returns the result of the last check, running it first when that is
// older than MaxAge.
func (c *cachedCheck) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < c.MaxAge {
		return c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	c.err = c.Check(ctx)
	c.at = time.Now()
	return c.err
}
