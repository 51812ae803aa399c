package kubeapi

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/m-lab/epoxy-extensions/token"
)

// SecretWatcher lists and watches Secrets in kube-system: client-go's
// SecretInterface has these methods.
type SecretWatcher interface {
	List(ctx context.Context, opts metav1.ListOptions) (*corev1.SecretList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// SecretCache is a watch-fed copy of the bootstrap-token Secrets in
// kube-system that keeps only what token.Slots reads: name, UID, resource
// version, creation time, description and expiration. The token secret is
// never kept. With it, Store answers GetAll without an Store request, so that
// a host whose slots are full is refused for free and a host with a free
// slot costs one Create.
//
// The cache is a hint, never the truth: it may lag the Store server by a
// watch event. A slot it shows free is tried with a Create, which the Store
// server refuses when the slot is taken after all (then token.Slots reads it with
// a Get); a token it still shows after another replica deleted it is
// counted until the watch says so, a few milliseconds. Neither can make two
// tokens share a slot or overwrite one.
type SecretCache struct {
	inf cache.SharedIndexInformer
}

// NewSecretCache returns a cache of the bootstrap-token Secrets secrets
// (which must be those of kube-system) lists and watches. It fills once
// Run runs.
func NewSecretCache(secrets SecretWatcher) *SecretCache {
	selector := fields.OneTermEqualSelector("type", string(bootstrapapi.SecretTypeBootstrapToken)).String()
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = selector
			return secrets.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = selector
			return secrets.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &corev1.Secret{}, 0, cache.Indexers{})
	// Cannot fail before the informer runs.
	_ = inf.SetTransform(slimSecret)
	return &SecretCache{inf: inf}
}

// Run fills the cache and keeps it current until ctx ends.
func (c *SecretCache) Run(ctx context.Context) { c.inf.RunWithContext(ctx) }

// Synced reports whether the cache has been filled once; before, it knows
// nothing and must not be asked.
func (c *SecretCache) Synced() bool { return c.inf.HasSynced() }

// WaitSynced waits until the cache is filled or ctx ends, and reports
// whether it is.
func (c *SecretCache) WaitSynced(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), c.inf.HasSynced)
}

// lookup returns the slot of token id as the cache knows it.
func (c *SecretCache) lookup(id string) (token.Slot, bool) {
	obj, ok, err := c.inf.GetStore().GetByKey(metav1.NamespaceSystem + "/" + bootstraputil.BootstrapTokenSecretName(id))
	if err != nil || !ok {
		return token.Slot{}, false
	}
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return token.Slot{}, false
	}
	return slotOf(id, s), true
}

// wrote records a Secret this process just created, so that its next
// answer for the same host does not wait for the watch event. The event
// then replaces it with the same object.
func (c *SecretCache) wrote(s *corev1.Secret) {
	if slim, err := slimSecret(s); err == nil {
		_ = c.inf.GetStore().Update(slim)
	}
}

// removed records that this process deleted the Secret of id.
func (c *SecretCache) removed(id string) {
	name := bootstraputil.BootstrapTokenSecretName(id)
	_ = c.inf.GetStore().Delete(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceSystem}})
}

// slimSecret keeps of a bootstrap-token Secret only what token.Slots reads; it is
// the informer's transform, so the token secret never enters the cache.
// Anything else (a deletion marker) passes unchanged.
func slimSecret(obj any) (any, error) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj, nil
	}
	slim := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:              s.Name,
			Namespace:         s.Namespace,
			UID:               s.UID,
			ResourceVersion:   s.ResourceVersion,
			CreationTimestamp: s.CreationTimestamp,
		},
		Type: s.Type,
	}
	for _, k := range []string{bootstrapapi.BootstrapTokenDescriptionKey, bootstrapapi.BootstrapTokenExpirationKey} {
		if v, ok := s.Data[k]; ok {
			if slim.Data == nil {
				slim.Data = map[string][]byte{}
			}
			slim.Data[k] = v
		}
	}
	return slim, nil
}

// ReadsAreFree reports whether a has a cache to read slots from: then
// token.Slots reads a host's slots before it creates (token.FreeReader).
func (a *Store) ReadsAreFree() bool { return a.Cache != nil }

// cacheSyncWait bounds how long GetAll waits for a cache that is still
// filling (the first list after start) before it reads the Store server.
const cacheSyncWait = 2 * time.Second

// GetAll returns the Secrets of those ids that exist: from the cache once
// it is filled, at no Store request; before, with one Get each.
func (a *Store) GetAll(ctx context.Context, ids []string) (map[string]token.Slot, error) {
	found := make(map[string]token.Slot, len(ids))
	if a.Cache != nil && !a.Cache.Synced() {
		wctx, cancel := context.WithTimeout(ctx, cacheSyncWait)
		a.Cache.WaitSynced(wctx)
		cancel()
	}
	if a.Cache != nil && a.Cache.Synced() {
		for _, id := range ids {
			if s, ok := a.Cache.lookup(id); ok {
				found[id] = s
			}
		}
		return found, nil
	}
	for _, id := range ids {
		s, ok, err := a.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if ok {
			found[id] = s
		}
	}
	return found, nil
}
