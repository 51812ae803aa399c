package kube

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/m-lab/epoxy-extensions/metrics"
)

// setBackoff makes Call back off from first, doubling up to limit, for
// the rest of the test.
func setBackoff(t *testing.T, first, limit time.Duration) {
	t.Helper()
	oldFirst, oldMax := firstBackoff, maxBackoff
	firstBackoff, maxBackoff = first, limit
	t.Cleanup(func() { firstBackoff, maxBackoff = oldFirst, oldMax })
}

// script returns a call that answers with errs in turn and then nil,
// counting its attempts in *n.
func script(n *int, errs ...error) func(context.Context) error {
	return func(context.Context) error {
		*n++
		if *n <= len(errs) {
			return errs[*n-1]
		}
		return nil
	}
}

// samples returns how many attempts of op ended in result, as the
// duration histogram counted them.
func samples(t *testing.T, op, result string) uint64 {
	t.Helper()
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("Gather() error = %v", err)
	}
	for _, f := range families {
		if f.GetName() != "epoxy_extensions_kube_api_call_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["operation"] == op && labels["result"] == result {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

func errorCount(op, reason string) float64 {
	return testutil.ToFloat64(metrics.KubeAPIErrors.WithLabelValues(op, reason))
}

var results = []string{"ok", "server_error", "unreachable", "timeout", "forbidden", "not_found", "canceled", "deadline"}

func TestCall(t *testing.T) {
	setBackoff(t, time.Millisecond, 2*time.Millisecond)
	unavailable := apierrors.NewServiceUnavailable("starting")
	forbidden := apierrors.NewForbidden(secrets, "x", errors.New("RBAC"))
	notFound := apierrors.NewNotFound(secrets, "x")
	tests := []struct {
		name         string
		op           string
		errs         []error
		wantAttempts int
		wantErr      error          // the very error Call must return; nil for success
		wantResults  map[string]int // attempts by result
	}{
		{name: "first time", op: "test_first_time", wantAttempts: 1, wantResults: map[string]int{"ok": 1}},
		{name: "transient then success", op: "test_transient", errs: []error{unavailable, refused(t), readTimeout(t)},
			wantAttempts: 4, wantResults: map[string]int{"server_error": 1, "unreachable": 1, "timeout": 1, "ok": 1}},
		{name: "permanent", op: "test_permanent", errs: []error{forbidden},
			wantAttempts: 1, wantErr: forbidden, wantResults: map[string]int{"forbidden": 1}},
		{name: "transient then permanent", op: "test_then_permanent", errs: []error{unavailable, notFound},
			wantAttempts: 2, wantErr: notFound, wantResults: map[string]int{"server_error": 1, "not_found": 1}},
		{name: "canceled is not retried", op: "test_canceled", errs: []error{context.Canceled},
			wantAttempts: 1, wantErr: context.Canceled, wantResults: map[string]int{"canceled": 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			beforeSamples, beforeErrors := map[string]uint64{}, map[string]float64{}
			for _, r := range results {
				beforeSamples[r], beforeErrors[r] = samples(t, tc.op, r), errorCount(tc.op, r)
			}
			n := 0
			err := Call(context.Background(), tc.op, script(&n, tc.errs...))
			if err != tc.wantErr {
				t.Errorf("Call() error = %v, want exactly %v", err, tc.wantErr)
			}
			if n != tc.wantAttempts {
				t.Errorf("Call() made %d attempts, want %d", n, tc.wantAttempts)
			}
			for _, r := range results {
				if got := samples(t, tc.op, r) - beforeSamples[r]; got != uint64(tc.wantResults[r]) {
					t.Errorf("duration{%s,%s} got %d samples, want %d", tc.op, r, got, tc.wantResults[r])
				}
				want := float64(tc.wantResults[r])
				if r == "ok" {
					want = 0
				}
				if got := errorCount(tc.op, r) - beforeErrors[r]; got != want {
					t.Errorf("errors{%s,%s} went up by %v, want %v", tc.op, r, got, want)
				}
			}
		})
	}
	if !apierrors.IsForbidden(Call(context.Background(), "test_permanent", script(new(int), forbidden))) {
		t.Error("apierrors.IsForbidden(Call(…)) = false for a Forbidden call, want true")
	}
}

// checkGaveUp fails unless err wraps last and says Call gave up after n
// attempts.
func checkGaveUp(t *testing.T, err, last error, n int) {
	t.Helper()
	if !errors.Is(err, last) || !apierrors.IsServiceUnavailable(err) {
		t.Errorf("Call() error = %v, want one wrapping %v", err, last)
	}
	if want := fmt.Sprintf("giving up after %d attempts", n); err != nil && !strings.Contains(err.Error(), want) {
		t.Errorf("Call() error = %q, want it to say %q", err, want)
	}
}

func TestCallGivesUpWhenDeadlineIsNearerThanBackoff(t *testing.T) {
	setBackoff(t, time.Hour, time.Hour)
	unavailable := apierrors.NewServiceUnavailable("starting")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	start := time.Now()
	err := Call(ctx, "test_gives_up", func(context.Context) error { n++; return unavailable })
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Call() returned after %s, want at once: the backoff outlasts the deadline", elapsed)
	}
	if n != 1 {
		t.Errorf("Call() made %d attempts, want 1", n)
	}
	checkGaveUp(t, err, unavailable, 1)
}

func TestCallRetriesUntilDeadline(t *testing.T) {
	setBackoff(t, 5*time.Millisecond, 10*time.Millisecond)
	unavailable := apierrors.NewServiceUnavailable("starting")
	const timeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	n := 0
	start := time.Now()
	err := Call(ctx, "test_until_deadline", func(context.Context) error { n++; return unavailable })
	if elapsed := time.Since(start); elapsed > timeout+500*time.Millisecond {
		t.Errorf("Call() returned after %s, want within about %s", elapsed, timeout)
	}
	if n < 5 {
		t.Errorf("Call() made %d attempts in %s with backoff ≤ 12ms, want at least 5", n, timeout)
	}
	checkGaveUp(t, err, unavailable, n)
}

func TestCallStopsOnCancel(t *testing.T) {
	setBackoff(t, time.Hour, time.Hour)
	unavailable := apierrors.NewServiceUnavailable("starting")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	start := time.Now()
	err := Call(ctx, "test_cancel", func(context.Context) error {
		n++
		time.AfterFunc(20*time.Millisecond, cancel) // while Call waits to retry
		return unavailable
	})
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Errorf("Call() returned %s after the cancel, want at once", elapsed)
	}
	if n != 1 {
		t.Errorf("Call() made %d attempts, want 1", n)
	}
	checkGaveUp(t, err, unavailable, 1)
}

// TestCallBacksOff checks that the wait between attempts doubles from
// firstBackoff and stops growing at maxBackoff.
func TestCallBacksOff(t *testing.T) {
	setBackoff(t, 10*time.Millisecond, 20*time.Millisecond)
	unavailable := apierrors.NewServiceUnavailable("starting")
	var times []time.Time
	err := Call(context.Background(), "test_backoff", func(context.Context) error {
		times = append(times, time.Now())
		if len(times) < 6 {
			return unavailable
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Call() error = %v, want nil", err)
	}
	want := []time.Duration{10, 20, 20, 20, 20} // ms, before jitter; uncapped the last would be 160
	for i, w := range want {
		w *= time.Millisecond
		if gap := times[i+1].Sub(times[i]); gap < w || gap > w+100*time.Millisecond {
			t.Errorf("wait before attempt %d = %s, want %s to %s", i+2, gap, w, w+100*time.Millisecond)
		}
	}
}

// TestCallRetriesRequestTimeout tells client-go's own timeout of one
// request (a deadline that is not ctx's) from the caller's deadline.
func TestCallRetriesRequestTimeout(t *testing.T) {
	setBackoff(t, time.Millisecond, time.Millisecond)
	// As client-go times out one request: a child of ctx, in a *url.Error.
	hung := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		defer cancel()
		<-ctx.Done()
		return &url.Error{Op: "Post", URL: "https://192.0.2.1:6443/api/v1/nodes", Err: ctx.Err()}
	}
	t.Run("request timeout is retried", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n := 0
		err := Call(ctx, "test_request_timeout", func(ctx context.Context) error {
			if n++; n == 1 {
				return hung(ctx)
			}
			return nil
		})
		if err != nil || n != 2 {
			t.Errorf("Call() = %v after %d attempts, want nil after 2", err, n)
		}
	})
	t.Run("caller's deadline is not", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
		defer cancel()
		n := 0
		err := Call(ctx, "test_caller_deadline", func(ctx context.Context) error { n++; return hung(ctx) })
		if !errors.Is(err, context.DeadlineExceeded) || n != 1 {
			t.Errorf("Call() = %v after %d attempts, want a deadline error after 1", err, n)
		}
	})
}
