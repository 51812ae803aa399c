// The fuzz targets run without this file (make fuzz builds with the tag
// fuzzing): it imports every backend, to list the errors the handler can
// see, and fuzzing instruments every package of the test binary and scans
// all their counters after each input, which made each input about 30
// times slower.

//go:build !fuzzing

package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/identity"
	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/metrics"
	"github.com/m-lab/epoxy-extensions/node"
	"github.com/m-lab/epoxy-extensions/overload"
	"github.com/m-lab/epoxy-extensions/token"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
	"github.com/m-lab/epoxy-extensions/token/kubectl"
)

// limitError is a token limit reached, as token.LimitError reports one: the
// handler knows it by its RetryTime method.
type limitError struct{ at time.Time }

func (e limitError) Error() string { return "host holds its most live join tokens" }

func (e limitError) RetryTime() time.Time { return e.at }

// TestOverloadAndLimit checks the statuses of a host over its token limit
// (429, Retry-After when its oldest token expires) and of overload, from the
// command slots or the API client's rate limiter (503, never 500), with
// empty bodies. TestBackendErrors (package main) does the same with the
// real backends' errors.
func TestOverloadAndLimit(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		want       int
		retryAfter string
		reason     string
	}{
		{name: "limit", err: fmt.Errorf("kubectl: %w", limitError{time.Now().Add(90*time.Second + 500*time.Millisecond)}),
			want: 429, retryAfter: "91", reason: "token_limit"},
		{name: "limit already past", err: limitError{time.Now().Add(-time.Second)},
			want: 429, retryAfter: "1", reason: "token_limit"},
		{name: "overloaded", err: fmt.Errorf("kubectl: %w: waited", overload.Err), want: 503, retryAfter: RetryAfter, reason: "busy"},
		{name: "other failure", err: errFake, want: 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, logs := testServer(errTokens{err: tc.err}, &fakeNodes{}, &fakeCreds{}, now)
			var before float64
			if tc.reason != "" {
				before = testutil.ToFloat64(metrics.Refusals.WithLabelValues(endpointTokenV2, tc.reason))
			}
			resp := do(t, s, "POST", "/v2/allocate_k8s_token", body(machine, now, ""))
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want || resp.Header.Get("Retry-After") != tc.retryAfter || len(got) != 0 {
				t.Errorf("got %d Retry-After %q body %q, want %d, %q, empty",
					resp.StatusCode, resp.Header.Get("Retry-After"), got, tc.want, tc.retryAfter)
			}
			if tc.reason != "" {
				if d := testutil.ToFloat64(metrics.Refusals.WithLabelValues(endpointTokenV2, tc.reason)) - before; d != 1 {
					t.Errorf("refusals{%s} went up by %v, want 1", tc.reason, d)
				}
				if !strings.Contains(logs.String(), machine) {
					t.Errorf("log does not name the host:\n%s", logs)
				}
			}
		})
	}
}

// TestStatusOf lists every error the handler can see, as it sees it (a
// backend's wrapped by call as that backend's failure), and what each comes
// to. The backends' errors are the real ones, found by grepping token/,
// node/, storage/, identity/, command/, kube/ and hostname/ for their
// errors.
func TestStatusOf(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	_, notMachine := hostname.ParseBMC("www.example.org")
	api := func(err error) error { return failed("kube_api", err) }
	exec := func(err error) error { return failed("kubectl", err) }
	store := func(err error) error { return failed("datastore", err) }
	id := func(reason string) error { return &identity.Error{Reason: reason, Detail: "test"} }
	const (
		allow = "Allow: POST"
		www   = `WWW-Authenticate: Bearer realm="epoxy-extensions"`
		retry = "Retry-After: " + RetryAfter
	)
	tests := []struct {
		name    string
		err     error
		code    int
		reason  string // the refusal's, or "" for a failure
		backend string // the failed backend's, or ""
		header  string // "Name: value", or "" for none
	}{
		// The handler's own refusals: Validator.Parse, Password, bmc.
		{name: "source", err: fmt.Errorf("%w: 203.0.113.9:1", ErrSource), code: 403, reason: "source"},
		{name: "method", err: fmt.Errorf("%w: %q", ErrMethod, "GET"), code: 405, reason: "method", header: allow},
		{name: "body too large", err: fmt.Errorf("%w: over 16384 bytes", ErrBodyTooLarge), code: 400, reason: "body_too_large"},
		{name: "decode", err: fmt.Errorf("%w: EOF", ErrDecode), code: 400, reason: "decode"},
		{name: "no v1", err: ErrNoV1, code: 400, reason: "no_v1"},
		{name: "hostname", err: fmt.Errorf("%w: %q", ErrHostname, "--all"), code: 400, reason: "hostname"},
		{name: "boot in future", err: fmt.Errorf("%w: later", ErrBootInFuture), code: 400, reason: "boot_in_future"},
		{name: "boot too old", err: fmt.Errorf("%w: no last_boot", ErrBootTooOld), code: 408, reason: "boot_too_old"},
		{name: "password", err: fmt.Errorf("%w: want one non-empty p", ErrPassword), code: 400, reason: "password"},
		{name: "not trusted", err: fmt.Errorf("%w: BMC passwords come only through a trusted proxy", ErrNotTrusted), code: 403, reason: "not_trusted"},
		{name: "not a machine's BMC", err: errors.Join(ErrNotMachine, notMachine), code: 400, reason: "not_machine"},
		{name: "a JSON answer that does not encode", err: &json.UnsupportedValueError{Str: "NaN"}, code: 500},

		// The identity check (not a backend: its errors come unwrapped).
		{name: "identity missing", err: id(identity.ReasonMissing), code: 401, reason: "identity_missing", header: www},
		{name: "identity invalid", err: id(identity.ReasonInvalid), code: 401, reason: "identity_invalid", header: www},
		{name: "identity unavailable", err: id(identity.ReasonUnavailable), code: 503, reason: "identity_unavailable", header: retry},
		{name: "identity check broken", err: errors.New("instance identity validator: x"), code: 500},

		// Token backends.
		{name: "token limit", err: exec(fmt.Errorf("slot: %w", &token.LimitError{Max: 3, RetryAt: now.Add(90*time.Second + 500*time.Millisecond)})),
			code: 429, reason: "token_limit", header: "Retry-After: 91"},
		{name: "token limit just past", err: api(&token.LimitError{Max: 3, RetryAt: now.Add(-time.Second)}), code: 429, reason: "token_limit", header: "Retry-After: 1"},
		{name: "slot taken", err: api(fmt.Errorf("slot 1: %w", token.ErrSlotTaken)), code: 500, backend: "kube_api"},
		{name: "slot changed", err: exec(fmt.Errorf("slot 1: %w", token.ErrSlotChanged)), code: 500, backend: "kubectl"},
		{name: "bad kubectl output", err: exec(fmt.Errorf("%w: x", kubectl.ErrBadOutput)), code: 500, backend: "kubectl"},
		{name: "bad join command", err: exec(fmt.Errorf("%w: x", joincmd.ErrBadOutput)), code: 500, backend: "kubectl"},
		{name: "kubectl told 429", err: exec(fmt.Errorf("kubectl create: %w: Error from server (TooManyRequests)", overload.Err)), code: 503, reason: "busy", header: retry},

		// command: the runner of kubectl.
		{name: "no command slot", err: exec(fmt.Errorf("kubectl: %w: waited 3s for a slot: %w", command.ErrBusy, context.DeadlineExceeded)),
			code: 503, reason: "busy", header: retry},
		{name: "killed at its deadline", err: exec(fmt.Errorf("kubectl create: %w", &command.KilledError{Path: "kubectl", Err: context.DeadlineExceeded})),
			code: 503, reason: "busy", header: retry},
		{name: "killed, canceled", err: exec(&command.KilledError{Path: "kubectl", Err: context.Canceled}), code: 500, backend: "kubectl"},
		{name: "kubectl failed", err: exec(errors.New(`kubectl: exit status 1: stderr: "error"`)), code: 500, backend: "kubectl"},

		// kube: the API backends' calls.
		{name: "API overloaded", err: api(fmt.Errorf("creating Secret: %w: %w", kube.ErrOverloaded, errors.New("client rate limiter Wait returned an error"))),
			code: 503, reason: "busy", header: retry},
		{name: "API forbidden", err: api(apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "x", errors.New("RBAC"))), code: 500, backend: "kube_api"},
		{name: "API gave up", err: api(fmt.Errorf("giving up after 3 attempts: %w", apierrors.NewServiceUnavailable("x"))), code: 500, backend: "kube_api"},
		{name: "API call deadline", err: api(fmt.Errorf("get: %w", context.DeadlineExceeded)), code: 500, backend: "kube_api"},
		{name: "API call canceled", err: api(context.Canceled), code: 500, backend: "kube_api"},

		// node.
		{name: "control-plane Node", err: api(fmt.Errorf("node x: %w", node.ErrControlPlane)), code: 403, reason: "control_plane_node"},
		{name: "another's Node", err: exec(fmt.Errorf("node x: %w", node.ErrNotOwnNode)), code: 403, reason: "not_own_node"},
		{name: "invalid Node name", err: exec(fmt.Errorf("%w: %q", node.ErrInvalidName, "--all")), code: 500, backend: "kubectl"},
		{name: "a refusal the handler does not know", err: exec(unknownRefusal{}), code: 500, backend: "kubectl"},

		// storage.
		{name: "BMC name without a project", err: store(fmt.Errorf("%w: x names no Google Cloud project", hostname.ErrNotMachine)), code: 400, reason: "not_machine"},
		{name: "BMC does not resolve", err: store(fmt.Errorf("%w x: no such host", hostname.ErrResolve)), code: 500, backend: "dns"},
		{name: "Datastore put failed", err: store(errors.New("datastore put x in project p: rpc error")), code: 500, backend: "datastore"},

		// The caller went away (fail adds ErrClientGone): 499, whatever else.
		{name: "client gone, backend failed", err: fmt.Errorf("%w: %w", ErrClientGone, exec(context.Canceled)), code: 499, reason: "client_gone"},
		{name: "client gone while waiting for a slot", err: fmt.Errorf("%w: %w", ErrClientGone, exec(command.ErrBusy)), code: 499, reason: "client_gone"},
		{name: "client gone, identity refused", err: fmt.Errorf("%w: %w", ErrClientGone, id(identity.ReasonInvalid)), code: 499, reason: "client_gone"},
		{name: "client gone, refused", err: fmt.Errorf("%w: %w", ErrClientGone, ErrNoV1), code: 499, reason: "client_gone"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := statusOf(tc.err, now)
			var reason, header string
			if got.refusal != nil {
				reason = got.refusal.Reason
			}
			for k, v := range got.header {
				header = k + ": " + v
			}
			if len(got.header) > 1 {
				t.Errorf("statusOf(%v) headers %v, want at most one", tc.err, got.header)
			}
			if got.code != tc.code || reason != tc.reason || got.backend != tc.backend || header != tc.header {
				t.Errorf("statusOf(%v) = %d, reason %q, backend %q, header %q; want %d, %q, %q, %q",
					tc.err, got.code, reason, got.backend, header, tc.code, tc.reason, tc.backend, tc.header)
			}
		})
	}
}

// unknownRefusal is a Refuser whose reason the handler does not know.
type unknownRefusal struct{}

func (unknownRefusal) Error() string         { return "refused" }
func (unknownRefusal) RefusalReason() string { return "no_such_reason" }
