package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"

	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/overload"
)

var secrets = schema.GroupResource{Resource: "secrets"}

// refused returns the error of a real dial to a loopback port nobody
// listens on, wrapped in *url.Error as client-go's HTTP client returns it.
func refused(t *testing.T) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c, err := net.Dial("tcp", addr)
	if err == nil {
		c.Close()
		t.Fatalf("dialing the closed port %s succeeded", addr)
	}
	return &url.Error{Op: "Post", URL: "https://" + addr + "/api/v1/namespaces/kube-system/secrets", Err: err}
}

// connected returns both ends of a real loopback TCP connection, closed at
// the end of the test.
func connected(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// reset returns the error of a real read from a connection the peer reset.
func reset(t *testing.T) error {
	t.Helper()
	c, s := connected(t)
	s.(*net.TCPConn).SetLinger(0) // close with RST
	s.Close()
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("reading from a reset connection: error %v, want ECONNRESET", err)
	}
	return &url.Error{Op: "Post", URL: "https://" + c.RemoteAddr().String() + "/", Err: err}
}

// readTimeout returns the error of a real read that passed its deadline.
func readTimeout(t *testing.T) error {
	t.Helper()
	c, _ := connected(t)
	c.SetReadDeadline(time.Now().Add(-time.Second))
	_, err := c.Read(make([]byte, 1))
	return &url.Error{Op: "Get", URL: "https://" + c.RemoteAddr().String() + "/", Err: err}
}

func TestTransientAndReason(t *testing.T) {
	tests := []struct {
		name          string
		err           error
		wantTransient bool
		wantReason    string
	}{
		{name: "nil", err: nil, wantReason: "ok"},
		{name: "not found", err: apierrors.NewNotFound(secrets, "x"), wantReason: "not_found"},
		{name: "already exists", err: apierrors.NewAlreadyExists(secrets, "x"), wantReason: "already_exists"},
		{name: "conflict", err: apierrors.NewConflict(secrets, "x", errors.New("changed")), wantReason: "conflict"},
		{name: "forbidden", err: apierrors.NewForbidden(secrets, "x", errors.New("RBAC")), wantReason: "forbidden"},
		{name: "unauthorized", err: apierrors.NewUnauthorized("bad token"), wantReason: "unauthorized"},
		{name: "invalid", err: apierrors.NewInvalid(schema.GroupKind{Kind: "Secret"}, "x",
			field.ErrorList{field.Required(field.NewPath("data"), "")}), wantReason: "invalid"},
		{name: "bad request", err: apierrors.NewBadRequest("no"), wantReason: "invalid"},
		{name: "too many requests", err: apierrors.NewTooManyRequests("slow down", 1), wantTransient: true, wantReason: "too_many_requests"},
		{name: "service unavailable", err: apierrors.NewServiceUnavailable("starting"), wantTransient: true, wantReason: "server_error"},
		{name: "internal error", err: apierrors.NewInternalError(errors.New("etcd")), wantTransient: true, wantReason: "server_error"},
		{name: "502 from a proxy", err: apierrors.NewGenericServerResponse(502, "POST", secrets, "", "bad gateway", 0, true),
			wantTransient: true, wantReason: "server_error"},
		{name: "server timeout", err: apierrors.NewServerTimeout(secrets, "create", 1), wantTransient: true, wantReason: "timeout"},
		{name: "timeout", err: apierrors.NewTimeoutError("etcd slow", 1), wantTransient: true, wantReason: "timeout"},
		{name: "connection refused", err: refused(t), wantTransient: true, wantReason: "unreachable"},
		{name: "connection reset", err: reset(t), wantTransient: true, wantReason: "unreachable"},
		{name: "read timeout", err: readTimeout(t), wantTransient: true, wantReason: "timeout"},
		{name: "EOF", err: &url.Error{Op: "Post", URL: "https://h/", Err: io.EOF}, wantTransient: true, wantReason: "unreachable"},
		{name: "unexpected EOF", err: &url.Error{Op: "Post", URL: "https://h/", Err: io.ErrUnexpectedEOF}, wantTransient: true, wantReason: "unreachable"},
		{name: "http2 connection lost", err: errors.New("http2: client connection lost"), wantTransient: true, wantReason: "unreachable"},
		{name: "canceled", err: context.Canceled, wantReason: "canceled"},
		{name: "deadline", err: context.DeadlineExceeded, wantReason: "deadline"},
		{name: "deadline in url.Error", err: &url.Error{Op: "Post", URL: "https://h/", Err: context.DeadlineExceeded}, wantReason: "deadline"},
		{name: "wrapped unavailable", err: fmt.Errorf("creating: %w", apierrors.NewServiceUnavailable("x")), wantTransient: true, wantReason: "server_error"},
		{name: "wrapped forbidden", err: fmt.Errorf("creating: %w", apierrors.NewForbidden(secrets, "x", errors.New("RBAC"))), wantReason: "forbidden"},
		{name: "wrapped refused", err: fmt.Errorf("creating: %w", refused(t)), wantTransient: true, wantReason: "unreachable"},
		{name: "wrapped canceled", err: fmt.Errorf("creating: %w", context.Canceled), wantReason: "canceled"},
		{name: "other", err: errors.New("boom"), wantReason: "other"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Transient(tc.err); got != tc.wantTransient {
				t.Errorf("Transient(%v) = %t, want %t", tc.err, got, tc.wantTransient)
			}
			if got := Reason(tc.err); got != tc.wantReason {
				t.Errorf("Reason(%v) = %q, want %q", tc.err, got, tc.wantReason)
			}
		})
	}
}

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

// TestCallOverload checks that a call that cannot be made in time because
// of overload is ErrOverloaded, which the handler answers 503: client-go's
// own rate limiter unable to grant a request before the deadline, and an
// API server answering 429 until time runs out.
func TestCallOverload(t *testing.T) {
	tests := []struct {
		name    string
		status  int // the API server's answer
		qps     float32
		timeout time.Duration
	}{
		{name: "client rate limiter", status: http.StatusOK, qps: 0.1, timeout: 500 * time.Millisecond},
		{name: "API server says 429", status: http.StatusTooManyRequests, qps: 1000, timeout: 700 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				if tc.status == http.StatusOK {
					w.Write([]byte(`{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}`))
					return
				}
				w.Write([]byte(`{"apiVersion":"v1","kind":"Status","status":"Failure","reason":"TooManyRequests","code":429}`))
			}))
			defer srv.Close()
			client, err := corev1client.NewForConfig(&rest.Config{Host: srv.URL, QPS: tc.qps, Burst: 1,
				ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
			if err != nil {
				t.Fatal(err)
			}
			get := func(ctx context.Context) error {
				_, err := client.Secrets("kube-system").Get(ctx, "x", metav1.GetOptions{})
				return err
			}
			if tc.status == http.StatusOK {
				// Spend the one token of the burst.
				if err := Call(context.Background(), "get_secret", get); err != nil {
					t.Fatalf("first call: %v", err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			err = Call(ctx, "get_secret", get)
			if !errors.Is(err, ErrOverloaded) || !errors.Is(err, overload.Err) {
				t.Errorf("Call() error = %v, want ErrOverloaded, which is overload.Err", err)
			}
			if tc.status == http.StatusTooManyRequests && !apierrors.IsTooManyRequests(err) {
				t.Errorf("Call() error = %v, want the API server's 429 still recognisable", err)
			}
			if d := time.Since(start); d > tc.timeout+time.Second {
				t.Errorf("Call() took %s, want within its %s deadline", d, tc.timeout)
			}
		})
	}
}

// TestRealClientErrors classifies the errors client-go itself returns for
// what an API server, or the network, may answer.
func TestRealClientErrors(t *testing.T) {
	refusedAddr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return "http://" + ln.Addr().String()
	}()
	answer := func(code int, reason string) string {
		return apiServer(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { status(w, code, reason) })
	}
	tests := []struct {
		name          string
		kubeconfig    string
		wantReason    string
		wantTransient bool
	}{
		{name: "403", kubeconfig: answer(403, "Forbidden"), wantReason: "forbidden"},
		{name: "409", kubeconfig: answer(409, "AlreadyExists"), wantReason: "already_exists"},
		{name: "401", kubeconfig: answer(401, "Unauthorized"), wantReason: "unauthorized"},
		{name: "422", kubeconfig: answer(422, "Invalid"), wantReason: "invalid"},
		{name: "429", kubeconfig: answer(429, "TooManyRequests"), wantReason: "too_many_requests", wantTransient: true},
		{name: "500", kubeconfig: answer(500, "InternalError"), wantReason: "server_error", wantTransient: true},
		{name: "503", kubeconfig: answer(503, "ServiceUnavailable"), wantReason: "server_error", wantTransient: true},
		{name: "504", kubeconfig: answer(504, "Timeout"), wantReason: "timeout", wantTransient: true},
		{name: "502 without a Status", kubeconfig: apiServer(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "bad gateway", http.StatusBadGateway)
		}), wantReason: "server_error", wantTransient: true},
		{name: "connection dropped", kubeconfig: apiServer(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
		}), wantReason: "unreachable", wantTransient: true},
		{name: "connection refused", kubeconfig: kubeconfigFor(t, refusedAddr), wantReason: "unreachable", wantTransient: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := NewClient(Options{Kubeconfig: tc.kubeconfig, RequestTimeout: 5 * time.Second})
			if err != nil {
				t.Fatalf("NewClient() error = %v", err)
			}
			_, err = c.Secrets("kube-system").Create(context.Background(), testSecret, metav1.CreateOptions{})
			if got := Reason(err); got != tc.wantReason {
				t.Errorf("Reason(%v) = %q, want %q", err, got, tc.wantReason)
			}
			if got := Transient(err); got != tc.wantTransient {
				t.Errorf("Transient(%v) = %t, want %t", err, got, tc.wantTransient)
			}
		})
	}
}

// TestCallWithRealClient retries a real create past a 503, sending what
// Config asks for.
func TestCallWithRealClient(t *testing.T) {
	setBackoff(t, time.Millisecond, time.Millisecond)
	var agent, contentType atomic.Value
	kubeconfig := apiServer(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		agent.Store(r.UserAgent())
		contentType.Store(r.Header.Get("Content-Type"))
		if n == 1 {
			status(w, 503, "ServiceUnavailable")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"bootstrap-token-abcdef","namespace":"kube-system"}}`)
	})
	c, _, err := NewClient(Options{Kubeconfig: kubeconfig, RequestTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("NewClient() error = %v", err)
	}
	attempts := 0
	err = Call(context.Background(), "test_real_client", func(ctx context.Context) error {
		attempts++
		_, err := c.Secrets("kube-system").Create(ctx, testSecret, metav1.CreateOptions{})
		return err
	})
	if err != nil || attempts != 2 {
		t.Errorf("Call() = %v after %d attempts, want nil after 2", err, attempts)
	}
	if got, _ := agent.Load().(string); got != UserAgent {
		t.Errorf("User-Agent = %q, want %q", got, UserAgent)
	}
	if got, _ := contentType.Load().(string); got != "application/vnd.kubernetes.protobuf" {
		t.Errorf("Content-Type = %q, want protobuf", got)
	}
}

// TestCallRetriesHungAPIServer points a real client at a server that
// accepts connections and never answers: each request times out after
// RequestTimeout and is tried again until the caller's deadline is near.
// hungServer listens on loopback, accepts every connection and never
// answers, like an API server that hangs, until the test ends; it returns
// its address.
func hungServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn // held open, unanswered
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				break
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// TestCallRetriesHungAPIServer: an API server that never answers costs
// retries of one request timeout each until the deadline, and the call
// fails with a deadline (500), not overload (503).
func TestCallRetriesHungAPIServer(t *testing.T) {
	setBackoff(t, time.Millisecond, time.Millisecond)
	addr := hungServer(t)
	// Either rate limiter refuses the last retry, near the deadline, for
	// want of time: client-go's default one (QPS 0) because the context is
	// done, ours because less than MinRequestTime would be left. What
	// failed is the API server, not the rate.
	for _, qps := range []float32{0, 1000} {
		t.Run(fmt.Sprintf("qps %v", qps), func(t *testing.T) {
			c, _, err := NewClient(Options{Kubeconfig: kubeconfigFor(t, "http://"+addr), RequestTimeout: 50 * time.Millisecond, QPS: qps, Burst: 1000})
			if err != nil {
				t.Fatalf("NewClient() error = %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			attempts := 0
			start := time.Now()
			err = Call(ctx, "test_hung", func(ctx context.Context) error {
				attempts++
				return c.Nodes().Delete(ctx, "mlab1-lga01.mlab-oti.measurement-lab.org", metav1.DeleteOptions{})
			})
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("Call() returned after %s, want by the 500ms deadline", elapsed)
			}
			if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, overload.Err) {
				t.Errorf("Call() error = %v, want a deadline, and no overload: the API server hung", err)
			}
			if attempts < 3 {
				t.Errorf("Call() made %d attempts of 50ms in 500ms, want the timed-out ones retried", attempts)
			}
		})
	}
}

// TestCallStarvedByRateLimiter: a request that the client's own rate
// limiter held until too little of its deadline was left for the API
// server to answer is overload (503), not a failed call, even though the
// limiter let it go with more than MinRequestTime left.
func TestCallStarvedByRateLimiter(t *testing.T) {
	addr := hungServer(t)
	cfg, err := Config(Options{Kubeconfig: kubeconfigFor(t, "http://"+addr), RequestTimeout: 10 * time.Second, QPS: 1, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	cfg.RateLimiter.Accept() // the burst is spent: the next token comes in 1 s
	c, err := corev1client.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1600*time.Millisecond)
	defer cancel()
	err = Call(ctx, "test_starved", func(ctx context.Context) error {
		_, err := c.Secrets("kube-system").Get(ctx, "bootstrap-token-abcdef", metav1.GetOptions{})
		return err
	})
	if !errors.Is(err, ErrOverloaded) || !errors.Is(err, overload.Err) {
		t.Errorf("Call() error = %v, want ErrOverloaded: held 1 s of 1.6 s by our limiter", err)
	}
}
