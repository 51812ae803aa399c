// Package kube connects the api backend to the Kubernetes API server: one
// client configuration for the process (from a kubeconfig, or the pod's
// service account), with side clients for informers and readiness that
// token traffic cannot starve, the cluster details a joining machine needs,
// and Call, which times, counts and retries every API call.
package kube

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"
)

// Options say how to reach the API server.
type Options struct {
	// Kubeconfig is the kubeconfig file to use; empty means the pod's
	// service account (in-cluster configuration).
	Kubeconfig string
	// RequestTimeout bounds each HTTP request to the API server.
	RequestTimeout time.Duration
	// QPS and Burst bound the client's request rate, so that a boot storm
	// cannot flood the API server. Zero QPS keeps client-go's default (5).
	QPS   float32
	Burst int
}

// ErrNoConfig means there is neither a kubeconfig nor an in-cluster
// service account to reach the API server with.
var ErrNoConfig = errors.New("no kubeconfig given and not running in a pod")

// UserAgent is how the server introduces itself to the API server, as seen
// in its audit log.
const UserAgent = "epoxy-extensions"

// Config returns the REST configuration for o.
func Config(o Options) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if o.Kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("reading kubeconfig %s: %w", o.Kubeconfig, err)
		}
	} else {
		cfg, err = rest.InClusterConfig()
		if errors.Is(err, rest.ErrNotInCluster) {
			return nil, ErrNoConfig
		}
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration: %w", err)
		}
	}
	cfg.Timeout = o.RequestTimeout
	if o.QPS > 0 {
		cfg.QPS = o.QPS
		cfg.Burst = max(o.Burst, 1)
		cfg.RateLimiter = leavesTime{flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)}
	}
	cfg.UserAgent = UserAgent
	// Core objects have a protobuf encoding, cheaper than JSON both ways.
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	return cfg, nil
}

// MinRequestTime is the least time a request must have left once the
// client's rate limiter lets it go: one granted later than that would time
// out on the way, a failure of ours (too many requests for the rate), not
// the API server's.
const MinRequestTime = 250 * time.Millisecond

// leavesTime is a rate limiter whose Wait also fails, as client-go's does
// for a wait past the deadline, when the wait leaves the request less than
// MinRequestTime: Call then reports overload (503), not a failed call.
type leavesTime struct{ flowcontrol.RateLimiter }

func (l leavesTime) Wait(ctx context.Context) error {
	start := time.Now()
	err := l.RateLimiter.Wait(ctx)
	d, ok := ctx.Deadline()
	if !ok {
		return err
	}
	left := time.Until(d)
	if g, ok := ctx.Value(grantKey{}).(*grant); ok {
		g.record(time.Since(start), left)
	}
	if err != nil {
		return err
	}
	if left < MinRequestTime {
		return fmt.Errorf("rate: Wait left %v of the deadline, under %v", left.Round(time.Millisecond), MinRequestTime)
	}
	return nil
}

// grantKey is the context key under which Call passes a *grant to the
// rate limiter.
type grantKey struct{}

// grant is what the rate limiter did with a call's last attempt: how long
// it held the request, and how much of the deadline it left it.
type grant struct {
	mu           sync.Mutex
	waited, left time.Duration
}

func (g *grant) record(waited, left time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waited, g.left = waited, left
}

// starved reports whether the limiter held the request longer than the
// time it then left it: a call that then ran out of time was cut short by
// our own rate, not by the API server.
func (g *grant) starved() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.heldTooLong()
}

// heldTooLong is starved with g.mu held.
func (g *grant) heldTooLong() bool {
	return g.waited > 0 && g.waited >= g.left
}

// outOfTime reports whether the limiter refused the request for want of
// time rather than of rate: it did not hold it longer than it left it, and
// left it less than MinRequestTime (or recorded nothing: client-go's own
// limiter, which refuses a request whose context is done).
func (g *grant) outOfTime() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.heldTooLong() && g.left < MinRequestTime
}

// NewClient returns the one core/v1 client the process shares for token
// and Node requests: its connections are pooled and reused across
// requests. Only the core group's client is built, not the whole clientset.
func NewClient(o Options) (corev1client.CoreV1Interface, *rest.Config, error) {
	cfg, err := Config(o)
	if err != nil {
		return nil, nil, err
	}
	c, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("API client for %s: %w", cfg.Host, err)
	}
	return c, cfg, nil
}

// SideQPS and SideBurst bound the request rate of each side client
// (WatchClient, ReadyClient): they send a few requests a minute, and a rate
// limiter of their own keeps them from being queued behind a boot storm's
// token requests, or from taking a share of its rate.
const (
	SideQPS   = 5
	SideBurst = 10
)

// WatchClient returns a core/v1 client for informers (List and Watch) made
// from cfg, the token client's configuration: with its own rate limiter,
// and without cfg's per-request Timeout, which would cut every watch after
// that long (the API server ends a watch on its own after the minutes the
// reflector asks for). Lists stay bounded by the reflector's own context.
func WatchClient(cfg *rest.Config) (corev1client.CoreV1Interface, error) {
	w := rest.CopyConfig(cfg)
	w.Timeout = 0
	w.QPS, w.Burst, w.RateLimiter = SideQPS, SideBurst, nil
	c, err := corev1client.NewForConfig(w)
	if err != nil {
		return nil, fmt.Errorf("watch client for %s: %w", cfg.Host, err)
	}
	return c, nil
}

// ReadyClient returns a REST client for readiness checks made from cfg,
// with a rate limiter of its own: token traffic that saturates the token
// client's limiter must not make the server look unready.
func ReadyClient(cfg *rest.Config) (rest.Interface, error) {
	r := rest.CopyConfig(cfg)
	r.QPS, r.Burst, r.RateLimiter = SideQPS, SideBurst, nil
	c, err := corev1client.NewForConfig(r)
	if err != nil {
		return nil, fmt.Errorf("readiness client for %s: %w", cfg.Host, err)
	}
	return c.RESTClient(), nil
}
