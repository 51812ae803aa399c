// Package kubeapi keeps join tokens as bootstrap-token Secrets through the
// Kubernetes API, in-process (the api backend): Store creates only, never
// overwriting a token, and SecretCache is the watch-fed copy of the
// Secrets that lets token.Slots read a host's slots at no request.
package kubeapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/token"
)

// SecretClient creates, reads and deletes Secrets in kube-system:
// client-go's SecretInterface has these methods.
type SecretClient interface {
	Create(ctx context.Context, secret *corev1.Secret, opts metav1.CreateOptions) (*corev1.Secret, error)
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Secret, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// Store keeps tokens as bootstrap-token Secrets through the Kubernetes Store,
// writing the very Secret `kubeadm token create` writes, in about a
// millisecond instead of a process start. It is a token.Store.
type Store struct {
	// Secrets reaches Secrets in kube-system.
	Secrets SecretClient
	// Cluster is the Store address and CA hash returned with every token.
	Cluster *kube.ClusterValue
	// Timeout bounds each Store call, retries included.
	Timeout time.Duration
	// Cache, when set and filled, answers GetAll without an Store request.
	Cache *SecretCache
}

var (
	_ token.Store      = (*Store)(nil)
	_ token.FreeReader = (*Store)(nil)
)

// cleanupTimeout bounds removing a token whose create failed half-way.
const cleanupTimeout = 2 * time.Second

func (a *Store) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if a.Timeout > 0 {
		return context.WithTimeout(ctx, a.Timeout)
	}
	return context.WithCancel(ctx)
}

// Put creates the bootstrap-token Secret of tok. Unlike kubeadm, which
// creates or updates, it only ever creates: an id already taken is never
// overwritten (token.ErrSlotTaken). When a retried create finds the Secret its own
// lost answer made, that is success; when the create fails after the Store
// server may have stored it, Put deletes it again, so that a failure leaves
// no usable token behind.
func (a *Store) Put(ctx context.Context, tok, description string, expires time.Time) (token.Join, error) {
	id, secret, ok := strings.Cut(tok, ".")
	if !ok {
		return token.Join{}, errors.New("token is not of the form id.secret")
	}
	s := token.BootstrapSecret(id, secret, description, expires)
	cctx, cancel := a.withTimeout(ctx)
	defer cancel()
	attempts := 0
	var created *corev1.Secret
	err := kube.Call(cctx, "create_secret", func(ctx context.Context) error {
		attempts++
		var err error
		created, err = a.Secrets.Create(ctx, s, metav1.CreateOptions{})
		return err
	})
	if apierrors.IsAlreadyExists(err) {
		// Only a retried create can find its own Secret: after a first
		// attempt the slot is someone else's, and reading it is the
		// caller's business.
		var mine bool
		if attempts > 1 {
			mine, created = a.holds(cctx, id, secret)
		}
		if mine {
			err = nil // an earlier attempt's answer was lost: the Secret is ours
		} else {
			return token.Join{}, fmt.Errorf("creating Secret %s/%s: %w", s.Namespace, s.Name, token.ErrSlotTaken)
		}
	}
	if err != nil {
		if mayBeStored(err) {
			a.cleanup(id, secret)
		}
		return token.Join{}, fmt.Errorf("creating Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	if a.Cache != nil && created != nil {
		a.Cache.wrote(created)
	}
	c := a.Cluster.Load()
	return token.Join{APIAddress: c.APIAddress, Token: tok, CAHash: c.CAHash}, nil
}

// mayBeStored reports whether a create that failed with err may have been
// stored all the same: not when the client never sent it (its rate limiter)
// or the Store server refused it with a client error (4xx, 429 included).
func mayBeStored(err error) bool {
	if errors.Is(err, kube.ErrOverloaded) || utilnet.IsConnectionRefused(err) {
		return false
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := status.Status().Code
		return code == 0 || code >= 500
	}
	return true
}

// holds reports whether the Secret of id holds secret, and returns it.
func (a *Store) holds(ctx context.Context, id, secret string) (bool, *corev1.Secret) {
	var s *corev1.Secret
	err := kube.Call(ctx, "get_secret", func(ctx context.Context) error {
		var err error
		s, err = a.Secrets.Get(ctx, bootstraputil.BootstrapTokenSecretName(id), metav1.GetOptions{})
		return err
	})
	if err != nil {
		return false, nil
	}
	got := s.Data[bootstrapapi.BootstrapTokenSecretKey]
	return subtle.ConstantTimeCompare(got, []byte(secret)) == 1, s
}

// cleanup deletes the Secret of id if it holds secret: a create that failed
// as far as the caller knows may have been stored all the same. One
// attempt each to read and delete, within cleanupTimeout, so that a failing
// Store server does not hold the answer up. A Secret still left behind (the
// Store server unreachable even for this) holds one of the host's slots until
// it expires with its TTL: the count stays right, the host has one token
// fewer to get meanwhile.
func (a *Store) cleanup(id, secret string) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	s, err := a.Secrets.Get(ctx, bootstraputil.BootstrapTokenSecretName(id), metav1.GetOptions{})
	if err != nil || subtle.ConstantTimeCompare(s.Data[bootstrapapi.BootstrapTokenSecretKey], []byte(secret)) != 1 {
		return
	}
	uid, rv := s.UID, s.ResourceVersion
	_ = a.Secrets.Delete(ctx, s.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
}

// Get returns the Secret of token id.
func (a *Store) Get(ctx context.Context, id string) (token.Slot, bool, error) {
	ctx, cancel := a.withTimeout(ctx)
	defer cancel()
	name := bootstraputil.BootstrapTokenSecretName(id)
	var s *corev1.Secret
	err := kube.Call(ctx, "get_secret", func(ctx context.Context) error {
		var err error
		s, err = a.Secrets.Get(ctx, name, metav1.GetOptions{})
		return err
	})
	if apierrors.IsNotFound(err) {
		if a.Cache != nil {
			a.Cache.removed(id)
		}
		return token.Slot{}, false, nil
	}
	if err != nil {
		return token.Slot{}, false, fmt.Errorf("reading Secret %s/%s: %w", metav1.NamespaceSystem, name, err)
	}
	if a.Cache != nil && s.Type == bootstrapapi.SecretTypeBootstrapToken {
		a.Cache.wrote(s) // the truth, for the next answer
	}
	return slotOf(id, s), true, nil
}

// slotOf reads what token.Slots needs from the Secret of token id. A Secret that
// is no bootstrap token has no description and no owner.
func slotOf(id string, s *corev1.Secret) token.Slot {
	slot := token.Slot{ID: id, UID: string(s.UID), ResourceVersion: s.ResourceVersion, Created: s.CreationTimestamp.Time}
	if s.Type != bootstrapapi.SecretTypeBootstrapToken {
		return slot
	}
	slot.Description = string(s.Data[bootstrapapi.BootstrapTokenDescriptionKey])
	if exp := s.Data[bootstrapapi.BootstrapTokenExpirationKey]; len(exp) > 0 {
		t, err := time.Parse(time.RFC3339, string(exp))
		if err != nil {
			t = time.Unix(0, 0) // unreadable: the Store server treats it as expired too
		}
		slot.Expires = t
	}
	return slot
}

// Remove deletes the Secret of s if it is still that object.
func (a *Store) Remove(ctx context.Context, s token.Slot) error {
	ctx, cancel := a.withTimeout(ctx)
	defer cancel()
	err := a.remove(ctx, bootstraputil.BootstrapTokenSecretName(s.ID), types.UID(s.UID), s.ResourceVersion)
	if a.Cache != nil && (err == nil || errors.Is(err, token.ErrSlotChanged)) {
		// Gone, or replaced: either way the cached object is not the
		// slot's; the watch brings the replacement, and until then a
		// Create finds out.
		a.Cache.removed(s.ID)
	}
	return err
}

func (a *Store) remove(ctx context.Context, name string, uid types.UID, rv string) error {
	opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{}}
	if uid != "" {
		opts.Preconditions.UID = &uid
	}
	if rv != "" {
		opts.Preconditions.ResourceVersion = &rv
	}
	err := kube.Call(ctx, "delete_secret", func(ctx context.Context) error {
		return a.Secrets.Delete(ctx, name, opts)
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return fmt.Errorf("deleting Secret %s/%s: %w", metav1.NamespaceSystem, name, token.ErrSlotChanged)
	}
	if err != nil {
		return fmt.Errorf("deleting Secret %s/%s: %w", metav1.NamespaceSystem, name, err)
	}
	return nil
}

// Name is the backend's name in logs and metrics: "kube_api".
func (*Store) Name() string { return "kube_api" }
