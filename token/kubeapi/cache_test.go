package kubeapi

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/token"
)

// runCache starts a SecretCache over the kube-system Secrets of cs and
// waits until it is filled; it stops at the end of t.
func runCache(t *testing.T, cs *fake.Clientset) *SecretCache {
	t.Helper()
	c := NewSecretCache(cs.CoreV1().Secrets(metav1.NamespaceSystem))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go c.Run(ctx)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if !c.WaitSynced(wctx) {
		t.Fatal("the Secret cache did not fill within 10 s")
	}
	return c
}

// secretCalls returns the verbs of the Secret requests cs saw after the
// first skip, for instance "create", "get" (list and watch excluded).
func secretCalls(cs *fake.Clientset, skip int) []string {
	var verbs []string
	for _, a := range cs.Actions()[skip:] {
		if a.GetResource().Resource == "secrets" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			verbs = append(verbs, a.GetVerb())
		}
	}
	return verbs
}

// TestSecretCacheKeepsNoSecret checks that the cache holds what token.Slots reads
// of a bootstrap-token Secret, and never its token secret.
func TestSecretCacheKeepsNoSecret(t *testing.T) {
	id := token.SlotID(slotHost, 0)
	s := token.BootstrapSecret(id, "0123456789abcdef", token.Description(slotHost), clock.Add(5*time.Minute))
	s.UID, s.ResourceVersion, s.CreationTimestamp = "uid-1", "7", metav1.NewTime(clock.Truncate(time.Second))
	c := runCache(t, fake.NewClientset(s))
	got, ok := c.lookup(id)
	want := token.Slot{ID: id, UID: "uid-1", ResourceVersion: "7", Description: token.Description(slotHost),
		Created: clock.Truncate(time.Second), Expires: clock.Add(5 * time.Minute).Truncate(time.Second)}
	if !ok || got.ID != want.ID || got.UID != want.UID || got.ResourceVersion != want.ResourceVersion ||
		got.Description != want.Description || !got.Created.Equal(want.Created) || !got.Expires.Equal(want.Expires) {
		t.Errorf("lookup(%s) = %+v, %t; want %+v", id, got, ok, want)
	}
	for _, obj := range c.inf.GetStore().List() {
		sec := obj.(*corev1.Secret)
		if len(sec.Data) != 2 || sec.Data["token-secret"] != nil || sec.Data["token-id"] != nil {
			t.Errorf("cached Secret %s keeps keys %v, want only description and expiration", sec.Name, keys(sec.Data))
		}
	}
	if _, ok := c.lookup(token.SlotID(slotHost, 1)); ok {
		t.Errorf("lookup of a slot without a Secret found one")
	}
}

func keys(m map[string][]byte) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	return k
}

// TestCachedSlotsCost checks what the cache saves: with a limit of 3, each
// of a host's three tokens costs one create and nothing else, and every
// refusal after them costs no request at all.
func TestCachedSlotsCost(t *testing.T) {
	cs := fake.NewClientset()
	c := runCache(t, cs)
	s := &token.Slots{
		Store: &Store{Secrets: cs.CoreV1().Secrets(metav1.NamespaceSystem), Cluster: kube.NewClusterValue(cluster),
			Timeout: 10 * time.Second, Cache: c},
		Max: 3, TTL: 5 * time.Minute,
	}
	skip := len(cs.Actions())
	for i := range 3 {
		if _, err := s.Create(context.Background(), slotHost); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
	}
	if got := secretCalls(cs, skip); len(got) != 3 || got[0] != "create" || got[1] != "create" || got[2] != "create" {
		t.Errorf("three tokens cost Secret requests %q, want three creates", got)
	}
	skip = len(cs.Actions())
	for range 10 {
		_, err := s.Create(context.Background(), slotHost)
		if !errors.Is(err, token.ErrLimit) {
			t.Fatalf("a fourth token: error %v, want ErrLimit", err)
		}
	}
	if got := secretCalls(cs, skip); len(got) != 0 {
		t.Errorf("ten refusals cost Secret requests %q, want none", got)
	}
}

// TestStaleCacheCostsARetry checks a cache that has not seen another
// replica's token in slot 0 yet: the create there fails, a Get reads the
// truth, the token goes into slot 1, and slot 0 keeps the other token.
func TestStaleCacheCostsARetry(t *testing.T) {
	s, f := newSlots(3)
	f.Put(token.SlotID(slotHost, 0), "aaaaaaaaaaaaaaaa", token.Description(slotHost), clock.Add(time.Minute)) // unseen by the cache
	cs := fake.NewClientset()
	s.Store.(*Store).Cache = runCache(t, cs)
	join, err := s.Create(context.Background(), slotHost)
	if err != nil {
		t.Fatal(err)
	}
	if id := join.Token[:6]; id != token.SlotID(slotHost, 1) {
		t.Errorf("token in slot id %s, want slot 1's %s", id, token.SlotID(slotHost, 1))
	}
	if got := string(f.Secret(token.SlotID(slotHost, 0)).Data["token-secret"]); got != "aaaaaaaaaaaaaaaa" {
		t.Errorf("slot 0 was overwritten")
	}
	want := []string{"create bootstrap-token-" + token.SlotID(slotHost, 0), "get bootstrap-token-" + token.SlotID(slotHost, 0),
		"create bootstrap-token-" + token.SlotID(slotHost, 1)}
	if len(f.Calls) != len(want) || f.Calls[0] != want[0] || f.Calls[1] != want[1] || f.Calls[2] != want[2] {
		t.Errorf("calls %q, want %q", f.Calls, want)
	}
	// The Get taught the cache: the next request skips slot 0 and 1.
	f.Calls = nil
	if _, err := s.Create(context.Background(), slotHost); err != nil {
		t.Fatal(err)
	}
	if want := []string{"create bootstrap-token-" + token.SlotID(slotHost, 2)}; len(f.Calls) != 1 || f.Calls[0] != want[0] {
		t.Errorf("calls %q, want %q", f.Calls, want)
	}
}

// TestCacheFollowsTheWatch checks that a token another replica makes, and
// its deletion, reach the cache through the watch.
func TestCacheFollowsTheWatch(t *testing.T) {
	cs := fake.NewClientset()
	c := runCache(t, cs)
	// The fake misses what happens between the list and the watch.
	waitFor(t, "the cache's watch", func() bool {
		for _, a := range cs.Actions() {
			if a.GetVerb() == "watch" {
				return true
			}
		}
		return false
	})
	id := token.SlotID(otherHost, 0)
	secrets := cs.CoreV1().Secrets(metav1.NamespaceSystem)
	if _, err := secrets.Create(context.Background(), token.BootstrapSecret(id, "0123456789abcdef", token.Description(otherHost), clock), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the created Secret in the cache", func() bool { _, ok := c.lookup(id); return ok })
	if err := secrets.Delete(context.Background(), "bootstrap-token-"+id, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted Secret gone from the cache", func() bool { _, ok := c.lookup(id); return !ok })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("waited 10 s for %s", what)
}
