// Package connlimit bounds the connections an HTTP server holds open. When
// the bound is reached, Accept waits (a new connection stays in the kernel's
// backlog; it is never reset) until a connection closes, and makes room by
// closing the connection that has waited longest without a request: an idle
// keep-alive connection, or one that opened and has sent nothing for a
// while. So thousands of idle connections cannot lock out a booting machine,
// Prometheus or a liveness probe, and busy connections are never cut.
//
// When every connection is busy (a boot storm waiting on kubeadm), a small
// reserve of further connections keeps health and metrics answerable: Gate
// serves health requests on a reserve connection at once (and closes it
// after), while any other request on one waits for a regular slot.
package connlimit

import (
	"container/list"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/overload"
)

// Reserve is how many connections beyond the limit are kept for health
// and metrics requests.
const Reserve = 16

// DefaultNewGrace is how long a new connection may stay silent before it
// counts as idle and may make room for another.
const DefaultNewGrace = time.Second

// Limiter bounds the open connections of the listeners it wraps. Use Listen
// on each listener and set the http.Server's ConnState to its ConnState.
type Limiter struct {
	max      int
	newGrace time.Duration

	mu       sync.Mutex
	open     int        // regular slots taken
	reserved int        // reserve slots taken
	waiting  int        // reserve connections waiting for a regular slot
	silent   int        // accepted connections that have sent no request yet
	idle     *list.List // of *conn, oldest first
	freed    chan struct{}
}

// New returns a Limiter for at most n open connections; n < 1 means 1.
func New(n int) *Limiter {
	return &Limiter{max: max(n, 1), newGrace: DefaultNewGrace, idle: list.New(), freed: make(chan struct{}, 1)}
}

// conn is an accepted connection: it frees its slot once, when closed.
type conn struct {
	net.Conn
	l    *Limiter
	once sync.Once
	// Guarded by l.mu:
	elem      *list.Element // in l.idle while idle
	idleSince time.Time
	fresh     bool // has not sent a request yet
	reserve   bool // holds a reserve slot
}

// Close closes the connection and frees its slot.
func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.elem != nil {
			c.l.idle.Remove(c.elem)
			c.elem = nil
		}
		c.l.spoke(c)
		reserve := c.reserve
		c.l.mu.Unlock()
		c.l.release(reserve)
	})
	return err
}

type listener struct {
	net.Listener
	l      *Limiter
	closed chan struct{} // closed by Close
	once   sync.Once
}

// Listen returns ln, whose Accept waits for a free slot. Closing it ends
// that wait at once: http.Server.Shutdown waits for Serve to return before
// it counts down its deadline, so an Accept waiting at the limit must not
// outlive the listener.
func (l *Limiter) Listen(ln net.Listener) net.Listener {
	return &listener{Listener: ln, l: l, closed: make(chan struct{})}
}

// Close closes the listener and ends any Accept waiting for a slot. Only
// its first call acts: http.Server.Shutdown may close it again.
func (ln *listener) Close() error {
	err := net.ErrClosed
	ln.once.Do(func() {
		close(ln.closed)
		err = ln.Listener.Close()
	})
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Accept waits until a connection may be opened, then accepts it. It
// returns net.ErrClosed once the listener is closed, even while it waits.
func (ln *listener) Accept() (net.Conn, error) {
	reserve, err := ln.l.acquire(ln.closed)
	if err != nil {
		return nil, err
	}
	c, err := ln.Listener.Accept()
	if err != nil {
		ln.l.release(reserve)
		return nil, err
	}
	tc := &conn{Conn: c, l: ln.l, reserve: reserve}
	ln.l.mu.Lock()
	tc.fresh = true
	ln.l.silent++
	tc.idleSince = time.Now()
	tc.elem = ln.l.idle.PushBack(tc)
	ln.l.mu.Unlock()
	return tc, nil
}

// acquire takes a slot, closing the longest-idle connection to make one
// when all are taken, else a reserve slot, else waits for one to free. It
// reports whether the slot is a reserve one, or returns net.ErrClosed once
// closed is closed.
func (l *Limiter) acquire(closed <-chan struct{}) (bool, error) {
	for {
		select {
		case <-closed:
			return false, net.ErrClosed
		default:
		}
		l.mu.Lock()
		if l.open < l.max {
			l.open++
			metrics.OpenConnections.Set(float64(l.open + l.reserved))
			l.mu.Unlock()
			return false, nil
		}
		victim, wait := l.evictable(time.Now())
		if victim == nil && l.reserved < Reserve {
			l.reserved++
			metrics.OpenConnections.Set(float64(l.open + l.reserved))
			l.mu.Unlock()
			return true, nil
		}
		l.mu.Unlock()
		if victim != nil {
			metrics.ConnectionsEvicted.Inc()
			victim.Close()
			continue
		}
		l.wait(closed, wait)
	}
}

// wait waits until a slot may have freed, for at most d, or until done is
// closed.
func (l *Limiter) wait(done <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.freed:
	case <-t.C:
	case <-done:
	}
}

// promote moves c from a reserve slot to a regular one, waiting as Accept
// would, until ctx ends.
func (l *Limiter) promote(ctx context.Context, c *conn) error {
	for {
		l.mu.Lock()
		if !c.reserve {
			l.mu.Unlock()
			return nil
		}
		if l.open < l.max {
			l.open++
			l.reserved--
			c.reserve = false
			l.mu.Unlock()
			l.signal()
			return nil
		}
		victim, wait := l.evictable(time.Now())
		l.mu.Unlock()
		if victim != nil {
			metrics.ConnectionsEvicted.Inc()
			victim.Close()
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		l.wait(ctx.Done(), wait)
	}
}

// evictable returns the idle connection to close, or how long to wait
// before one may be. Called with l.mu held.
func (l *Limiter) evictable(now time.Time) (*conn, time.Duration) {
	wait := 100 * time.Millisecond
	for e := l.idle.Front(); e != nil; e = e.Next() {
		c := e.Value.(*conn)
		if !c.fresh {
			return c, 0
		}
		if age := now.Sub(c.idleSince); age >= l.newGrace {
			return c, 0
		} else if l.newGrace-age < wait {
			wait = l.newGrace - age
		}
	}
	return nil, wait
}

// spoke records that c has sent a request, or is gone. Called with l.mu
// held.
func (l *Limiter) spoke(c *conn) {
	if c.fresh {
		c.fresh = false
		l.silent--
	}
}

// WaitSilent waits until every accepted connection has sent its first
// request (or closed), checking every 10 ms, or until ctx ends, and
// reports whether none is left silent. A server calls it on shutdown after
// closing its listeners and before http.Server.Shutdown, which drops,
// unanswered, a request it finishes reading after Shutdown began: a
// client that connected a moment before would see its connection closed.
func (l *Limiter) WaitSilent(ctx context.Context) bool {
	for {
		l.mu.Lock()
		silent := l.silent
		l.mu.Unlock()
		if silent == 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// release frees a slot: a reserve one when reserve is set.
func (l *Limiter) release(reserve bool) {
	l.mu.Lock()
	if reserve {
		l.reserved--
	} else {
		l.open--
	}
	metrics.OpenConnections.Set(float64(l.open + l.reserved))
	l.mu.Unlock()
	l.signal()
}

func (l *Limiter) signal() {
	select {
	case l.freed <- struct{}{}:
	default:
	}
}

type connKey struct{}

// ConnContext is for http.Server.ConnContext: it lets Gate find the
// request's connection.
func (l *Limiter) ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// Gate serves health requests (those priority accepts) on a reserve
// connection at once, closing the connection afterwards so the reserve
// frees again; any other request on a reserve connection first waits for a
// regular slot, unless half the reserve is waiting already: then it gets an
// empty 503 with overload's Retry-After, so that waiting requests never
// crowd health checks out. Requests on regular connections pass straight through.
func (l *Limiter) Gate(next http.Handler, priority func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := r.Context().Value(connKey{}).(*conn)
		if ok {
			l.mu.Lock()
			reserve := c.reserve
			l.mu.Unlock()
			if reserve {
				w.Header().Set("Connection", "close")
				if !priority(r) {
					l.mu.Lock()
					full := l.waiting >= Reserve/2
					if !full {
						l.waiting++
					}
					l.mu.Unlock()
					if full {
						metrics.ConnectionsShed.Inc()
						w.Header().Set("Retry-After", overload.RetryAfter)
						w.WriteHeader(http.StatusServiceUnavailable)
						return
					}
					err := l.promote(r.Context(), c)
					l.mu.Lock()
					l.waiting--
					l.mu.Unlock()
					if err != nil {
						return // the caller went away while waiting
					}
					w.Header().Del("Connection")
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// ConnState follows each connection's state for http.Server.ConnState: a
// connection between requests may make room for a new one, one serving a
// request may not.
func (l *Limiter) ConnState(nc net.Conn, state http.ConnState) {
	c, ok := nc.(*conn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	switch state {
	case http.StateActive, http.StateHijacked, http.StateClosed:
		if c.elem != nil {
			l.idle.Remove(c.elem)
			c.elem = nil
		}
		l.spoke(c)
	case http.StateIdle:
		if c.elem == nil {
			c.idleSince = time.Now()
			c.elem = l.idle.PushBack(c)
		}
	}
}
