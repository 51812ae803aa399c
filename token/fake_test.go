package token

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

var (
	_ SecretClient = (*fakeCluster)(nil)
	_ SecretClient = corev1client.SecretInterface(nil)
)

// fakeCluster keeps Secrets as the API server does where it matters here:
// a create of an existing name fails atomically, a delete honours its
// preconditions. hook, when set, runs before each call (op is "create",
// "get" or "delete") outside the lock: it may act as another replica, or
// return an error to answer with. storeThenFail makes the next creates store
// the Secret and still answer with the given errors, as when an answer is
// lost. It is safe for concurrent use.
type fakeCluster struct {
	now           func() time.Time
	hook          func(op, name string) error
	storeThenFail []error

	mu      sync.Mutex
	secrets map[string]*corev1.Secret
	rv      int
	calls   []string
}

func newFakeCluster(now func() time.Time) *fakeCluster {
	return &fakeCluster{now: now, secrets: map[string]*corev1.Secret{}}
}

func (f *fakeCluster) record(op, name string) error {
	f.mu.Lock()
	f.calls = append(f.calls, op+" "+name)
	f.mu.Unlock()
	if f.hook != nil {
		return f.hook(op, name)
	}
	return nil
}

func (f *fakeCluster) Create(ctx context.Context, s *corev1.Secret, _ metav1.CreateOptions) (*corev1.Secret, error) {
	if err := f.record("create", s.Name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.secrets[s.Name]; ok {
		return nil, apierrors.NewAlreadyExists(secretsGR, s.Name)
	}
	f.rv++
	c := s.DeepCopy()
	c.UID = types.UID(fmt.Sprintf("uid-%d", f.rv))
	c.ResourceVersion = fmt.Sprint(f.rv)
	c.CreationTimestamp = metav1.NewTime(f.now().Truncate(time.Second))
	f.secrets[s.Name] = c
	if len(f.storeThenFail) > 0 {
		err := f.storeThenFail[0]
		f.storeThenFail = f.storeThenFail[1:]
		return nil, err
	}
	return c.DeepCopy(), nil
}

func (f *fakeCluster) Get(ctx context.Context, name string, _ metav1.GetOptions) (*corev1.Secret, error) {
	if err := f.record("get", name); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.secrets[name]
	if !ok {
		return nil, apierrors.NewNotFound(secretsGR, name)
	}
	return s.DeepCopy(), nil
}

func (f *fakeCluster) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	if err := f.record("delete", name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.secrets[name]
	if !ok {
		return apierrors.NewNotFound(secretsGR, name)
	}
	if p := opts.Preconditions; p != nil {
		if (p.UID != nil && *p.UID != s.UID) || (p.ResourceVersion != nil && *p.ResourceVersion != s.ResourceVersion) {
			return apierrors.NewConflict(secretsGR, name, fmt.Errorf("precondition failed"))
		}
	}
	delete(f.secrets, name)
	return nil
}

// put stores a Secret for token id as another replica, or another tool,
// would have.
func (f *fakeCluster) put(id, secret, description string, expires time.Time) {
	s := BootstrapSecret(id, secret, description, expires)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rv++
	s.UID = types.UID(fmt.Sprintf("uid-%d", f.rv))
	s.ResourceVersion = fmt.Sprint(f.rv)
	s.CreationTimestamp = metav1.NewTime(f.now().Add(-time.Minute).Truncate(time.Second))
	f.secrets[s.Name] = s
}

// live returns, by description, the number of Secrets that have not
// expired at now.
func (f *fakeCluster) live(now time.Time) map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := map[string]int{}
	for _, s := range f.secrets {
		exp, err := time.Parse(time.RFC3339, string(s.Data["expiration"]))
		if err == nil && exp.After(now) {
			n[string(s.Data["description"])]++
		}
	}
	return n
}

func (f *fakeCluster) secret(id string) *corev1.Secret {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.secrets["bootstrap-token-"+id]
}
