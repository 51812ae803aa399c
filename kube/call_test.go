package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
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
