// Package kubectl keeps bootstrap tokens with kubectl, one process per API
// call: Store is the token.Store of the exec backend.
package kubectl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/overload"
	"github.com/m-lab/epoxy-extensions/token"
)

// Store keeps tokens with kubectl: one process creates all the Secrets
// waiting for a command slot at the time (create), one process does each
// other API call. It creates
// the very bootstrap-token Secret the API store and `kubeadm token create`
// write, but only ever creates (kubeadm creates or updates, and so can
// overwrite a token it failed to read), and computes the join details
// in-process from the kubeconfig, as kubeadm's --print-join-command does.
// It is a token.Store and a token.Lister.
type Store struct {
	// Runner runs kubectl. When it has command slots (command.Limited),
	// creates wait for one together and run as one batch.
	Runner command.Runner
	// BinDir holds the kubectl binary.
	BinDir string
	// Kubeconfig is passed to kubectl as --kubeconfig; empty leaves kubectl
	// to find its own.
	Kubeconfig string
	// Cluster is the API address and CA hash returned with every token,
	// read from the same kubeconfig.
	Cluster *kube.ClusterValue
	// Timeout, when positive, is the Runner's own bound on each run: a
	// create tells the API server to give up by then too.
	Timeout time.Duration
	// MaxBatch is the most Secrets one kubectl run creates; 0 means
	// DefaultMaxBatch.
	MaxBatch int

	creates creates
}

var (
	_ token.Store  = (*Store)(nil)
	_ token.Lister = (*Store)(nil)
)

// ErrBadOutput means kubectl succeeded but printed something we cannot
// trust.
var ErrBadOutput = errors.New("unexpected kubectl output")

// secretsPath is the API path of Secrets in kube-system.
const secretsPath = "/api/v1/namespaces/" + metav1.NamespaceSystem + "/secrets"

// Put creates the bootstrap-token Secret of tok, create-only: the API
// server refuses atomically to create a Secret whose name exists
// (ErrSlotTaken), so that no token is ever overwritten. The create waits
// for a command slot together with the others pending, and goes with them
// into one `kubectl create` run (create). The Secret, token secret
// included, goes on kubectl's stdin: never on a command line, never in a
// file. A create that failed after the API server may
// have stored it (kubectl killed at its deadline, a lost answer), or that
// succeeded after the request ended, is undone (cleanup), so that no token
// nobody received holds a slot.
func (k *Store) Put(ctx context.Context, tok, description string, expires time.Time) (token.Join, error) {
	id, secret, ok := strings.Cut(tok, ".")
	if !ok {
		return token.Join{}, errors.New("token is not of the form id.secret")
	}
	s := token.BootstrapSecret(id, secret, description, expires)
	s.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"}
	o := k.create(ctx, s)
	if o.err != nil {
		return token.Join{}, o.err // undone already if it may have been stored
	}
	if err := ctx.Err(); err != nil {
		// Created, but nobody waits for it any more.
		k.cleanup(ctx, map[string]string{id: secret})
		err = fmt.Errorf("kubectl create secret %s: created as the request ended, deleted again: %w", s.Name, err)
		if errors.Is(err, context.DeadlineExceeded) {
			return token.Join{}, fmt.Errorf("%w: %w", overload.Err, err)
		}
		return token.Join{}, err
	}
	c := k.Cluster.Load()
	return token.Join{APIAddress: c.APIAddress, Token: tok, CAHash: c.CAHash}, nil
}

// requestTimeout returns the time a run started now has before ctx's
// deadline or the Runner's Timeout, whichever comes first; 0 when neither
// bounds it.
func (k *Store) requestTimeout(ctx context.Context) time.Duration {
	t := k.Timeout
	if deadline, ok := ctx.Deadline(); ok {
		if left := time.Until(deadline); t <= 0 || left < t {
			t = left
		}
	}
	return max(t.Round(time.Millisecond), 0)
}

// refused reports whether msg, a kubectl error, is an answer of the API
// server that means the create was not stored: a 4xx status.
func refused(msg string) bool {
	for _, reason := range []string{"(BadRequest)", "(Unauthorized)", "(Forbidden)", "(NotFound)",
		"(Invalid)", "(TooManyRequests)", "(UnsupportedMediaType)", "(RequestEntityTooLarge)"} {
		if strings.Contains(msg, "Error from server "+reason) {
			return true
		}
	}
	return false
}

// Admit marks ctx as one request's (command.Admit): its first kubectl run,
// or the batch its first create goes into, waits for a command slot in
// line, and may give up with command.ErrBusy; every later run of it goes
// before requests not yet admitted and never gives up before ctx ends.
// release does nothing.
func (k *Store) Admit(ctx context.Context) (_ context.Context, release func(), _ error) {
	return command.Admit(ctx), func() {}, nil
}

// Name is the backend's name in logs and metrics: "kubectl", the one
// program it runs.
func (*Store) Name() string { return "kubectl" }
