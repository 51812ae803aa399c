// Package fakecluster is a fake of the Secrets of kube-system for the
// tests of token and its stores: it keeps Secrets as the API server does
// where it matters to them.
package fakecluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/m-lab/epoxy-extensions/token"
)

// GR is the group and resource of its errors.
var GR = schema.GroupResource{Resource: "secrets"}

// Cluster keeps Secrets as the API server does where it matters here:
// a create of an existing name fails atomically, a delete honours its
// preconditions. Hook, when set, runs before each call (op is "create",
// "get" or "delete") outside the lock: it may act as another replica, or
// return an error to answer with. StoreThenFail makes the next creates store
// the Secret and still answer with the given errors, as when an answer is
// lost. It is safe for concurrent use.
type Cluster struct {
	now           func() time.Time
	Hook          func(op, name string) error
	StoreThenFail []error

	Mu      sync.Mutex
	Secrets map[string]*corev1.Secret
	rv      int
	Calls   []string
}

// New returns an empty Cluster whose clock is now.
func New(now func() time.Time) *Cluster {
	return &Cluster{now: now, Secrets: map[string]*corev1.Secret{}}
}

func (f *Cluster) record(op, name string) error {
	f.Mu.Lock()
	f.Calls = append(f.Calls, op+" "+name)
	f.Mu.Unlock()
	if f.Hook != nil {
		return f.Hook(op, name)
	}
	return nil
}

// Create stores s unless its name is taken (AlreadyExists).
func (f *Cluster) Create(ctx context.Context, s *corev1.Secret, _ metav1.CreateOptions) (*corev1.Secret, error) {
	if err := f.record("create", s.Name); err != nil {
		return nil, err
	}
	f.Mu.Lock()
	defer f.Mu.Unlock()
	if _, ok := f.Secrets[s.Name]; ok {
		return nil, apierrors.NewAlreadyExists(GR, s.Name)
	}
	f.rv++
	c := s.DeepCopy()
	c.UID = types.UID(fmt.Sprintf("uid-%d", f.rv))
	c.ResourceVersion = fmt.Sprint(f.rv)
	c.CreationTimestamp = metav1.NewTime(f.now().Truncate(time.Second))
	f.Secrets[s.Name] = c
	if len(f.StoreThenFail) > 0 {
		err := f.StoreThenFail[0]
		f.StoreThenFail = f.StoreThenFail[1:]
		return nil, err
	}
	return c.DeepCopy(), nil
}

// Get returns the Secret name, or NotFound.
func (f *Cluster) Get(ctx context.Context, name string, _ metav1.GetOptions) (*corev1.Secret, error) {
	if err := f.record("get", name); err != nil {
		return nil, err
	}
	f.Mu.Lock()
	defer f.Mu.Unlock()
	s, ok := f.Secrets[name]
	if !ok {
		return nil, apierrors.NewNotFound(GR, name)
	}
	return s.DeepCopy(), nil
}

// Delete removes the Secret name if its preconditions hold (else Conflict).
func (f *Cluster) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	if err := f.record("delete", name); err != nil {
		return err
	}
	f.Mu.Lock()
	defer f.Mu.Unlock()
	s, ok := f.Secrets[name]
	if !ok {
		return apierrors.NewNotFound(GR, name)
	}
	if p := opts.Preconditions; p != nil {
		if (p.UID != nil && *p.UID != s.UID) || (p.ResourceVersion != nil && *p.ResourceVersion != s.ResourceVersion) {
			return apierrors.NewConflict(GR, name, fmt.Errorf("precondition failed"))
		}
	}
	delete(f.Secrets, name)
	return nil
}

// Put stores a Secret for token id as another replica, or another tool,
// would have.
func (f *Cluster) Put(id, secret, description string, expires time.Time) {
	s := token.BootstrapSecret(id, secret, description, expires)
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.rv++
	s.UID = types.UID(fmt.Sprintf("uid-%d", f.rv))
	s.ResourceVersion = fmt.Sprint(f.rv)
	s.CreationTimestamp = metav1.NewTime(f.now().Add(-time.Minute).Truncate(time.Second))
	f.Secrets[s.Name] = s
}

// Live returns, by description, the number of Secrets that have not
// expired at now.
func (f *Cluster) Live(now time.Time) map[string]int {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	n := map[string]int{}
	for _, s := range f.Secrets {
		exp, err := time.Parse(time.RFC3339, string(s.Data["expiration"]))
		if err == nil && exp.After(now) {
			n[string(s.Data["description"])]++
		}
	}
	return n
}

// Secret returns the Secret of token id, nil when there is none.
func (f *Cluster) Secret(id string) *corev1.Secret {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return f.Secrets["bootstrap-token-"+id]
}
