package handler

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

var errFake = errors.New("fake backend failure")

// fakeName is the name every fake backend gives itself (Backend), unless
// told another.
const fakeName = "kubectl"

// named is a fake backend's name: fakeName, or the one it was given.
type named string

// Name returns n, or fakeName when n is empty.
func (n named) Name() string {
	if n == "" {
		return fakeName
	}
	return string(n)
}

// fakeTokens issues a distinct token per call and remembers which host got it.
type fakeTokens struct {
	named
	fail  bool
	delay time.Duration

	mu     sync.Mutex
	issued map[string]string // token → host
	calls  int
}

var _ TokenIssuer = (*fakeTokens)(nil)

func (f *fakeTokens) Create(ctx context.Context, host string) (joincmd.Join, error) {
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail {
		return joincmd.Join{}, errFake
	}
	if f.issued == nil {
		f.issued = make(map[string]string)
	}
	tok := fmt.Sprintf("%06d.%016d", f.calls, f.calls)
	f.issued[tok] = host
	return joincmd.Join{APIAddress: "192.0.2.1:6443", Token: tok, CAHash: "sha256:" + fmt.Sprintf("%064x", f.calls)}, nil
}

// fakeNodes records the names it was asked to delete, and fails with
// errFake (fail) or err.
type fakeNodes struct {
	named
	fail bool
	err  error

	mu     sync.Mutex
	names  []string
	owners []netip.Addr
}

var _ NodeDeleter = (*fakeNodes)(nil)

func (f *fakeNodes) Delete(ctx context.Context, name string, owner netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.names = append(f.names, name)
	f.owners = append(f.owners, owner)
	if f.fail {
		return errFake
	}
	return f.err
}

// errProtected is how a node backend refuses a control-plane Node.
type errProtected struct{}

func (errProtected) Error() string         { return "control-plane Nodes are never deleted" }
func (errProtected) RefusalReason() string { return "control_plane_node" }

// fakeCreds records what it was asked to store.
type fakeCreds struct {
	named
	err error

	mu   sync.Mutex
	puts []hostname.BMC
	pass []string
}

var _ CredentialStore = (*fakeCreds)(nil)

func (f *fakeCreds) Put(ctx context.Context, bmc hostname.BMC, password string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.puts = append(f.puts, bmc)
	f.pass = append(f.pass, password)
	return f.err
}

// syncBuffer is a log sink safe for concurrent handlers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testServer returns a Server over the given fakes, logging into the returned
// buffer, with the clock fixed at now.
func testServer(tokens TokenIssuer, nodes NodeDeleter, creds CredentialStore, now time.Time) (*Server, *syncBuffer) {
	logs := &syncBuffer{}
	return &Server{
		Tokens: tokens,
		Nodes:  nodes,
		Creds:  creds,
		Validator: Validator{
			MaxBootAge:   120 * time.Minute,
			MaxClockSkew: 5 * time.Minute,
			Now:          func() time.Time { return now },
		},
		BackendTimeout: 5 * time.Second,
		Log:            slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, logs
}

// errTokens fails every Create with err.
type errTokens struct {
	named
	err error
}

func (e errTokens) Create(ctx context.Context, host string) (joincmd.Join, error) {
	return joincmd.Join{}, e.err
}
