package token

import (
	"context"
	"errors"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/m-lab/epoxy-extensions/kube"
)

var (
	_ SecretCreator = (*fakeSecrets)(nil)
	_ SecretCreator = corev1client.SecretInterface(nil)
)

// fakeSecrets records the Secrets it is asked to create and answers call i
// (from 0) with errs[i], or success when errs has no such entry. With
// block, it waits for ctx instead and returns its error.
type fakeSecrets struct {
	errs  []error
	block bool

	mu   sync.Mutex
	got  []*corev1.Secret
	ctxs []context.Context
}

func (f *fakeSecrets) Create(ctx context.Context, s *corev1.Secret, opts metav1.CreateOptions) (*corev1.Secret, error) {
	f.mu.Lock()
	i := len(f.got)
	f.got = append(f.got, s.DeepCopy())
	f.ctxs = append(f.ctxs, ctx)
	f.mu.Unlock()
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if i < len(f.errs) && f.errs[i] != nil {
		return nil, f.errs[i]
	}
	return s.DeepCopy(), nil
}

var (
	joinTokenRE = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	cluster     = kube.Cluster{APIAddress: "api.mlab-sandbox.measurement-lab.org:6443", CAHash: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
	// A quarter past seven in the evening in New York, 00:15 the next day in UTC.
	clock     = time.Date(2026, 11, 20, 19, 15, 30, 999, time.FixedZone("EST", -5*3600))
	secretsGR = schema.GroupResource{Resource: "secrets"}
)

// scripted returns a generator that hands out toks in turn.
func scripted(toks ...string) func() (string, error) {
	var mu sync.Mutex
	return func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		if len(toks) == 0 {
			return "", errors.New("generator ran dry")
		}
		tok := toks[0]
		toks = toks[1:]
		return tok, nil
	}
}

// wantData is the Secret data `kubeadm token create --ttl 5m` stores for
// id.secret at clock, described for host.
func wantData(id, secret, description string) map[string]string {
	return map[string]string{
		"token-id":                       id,
		"token-secret":                   secret,
		"expiration":                     "2026-11-21T00:20:30Z",
		"description":                    description,
		"usage-bootstrap-authentication": "true",
		"usage-bootstrap-signing":        "true",
		"auth-extra-groups":              "system:bootstrappers:kubeadm:default-node-token",
	}
}

// checkSecret fails unless s is exactly the Secret kubeadm creates for
// id with data.
func checkSecret(t *testing.T, s *corev1.Secret, id string, data map[string]string) {
	t.Helper()
	if s.Name != "bootstrap-token-"+id || s.Namespace != "kube-system" {
		t.Errorf("Secret is %s/%s, want kube-system/bootstrap-token-%s", s.Namespace, s.Name, id)
	}
	if s.Type != "bootstrap.kubernetes.io/token" {
		t.Errorf("Secret type = %q, want bootstrap.kubernetes.io/token", s.Type)
	}
	if len(s.Labels) != 0 || len(s.Annotations) != 0 || len(s.StringData) != 0 || s.GenerateName != "" {
		t.Errorf("Secret has labels %v, annotations %v, stringData %v, generateName %q; want none",
			s.Labels, s.Annotations, s.StringData, s.GenerateName)
	}
	got := map[string]string{}
	for k, v := range s.Data {
		got[k] = string(v)
	}
	if !maps.Equal(got, data) {
		t.Errorf("Secret data = %q, want %q", got, data)
	}
}

func TestAPICreate(t *testing.T) {
	const host = "mlab1-lga01.mlab-oti.measurement-lab.org"
	tokA, tokB, tokC := "abcdef.0123456789abcdef", "ghijkl.0123456789abcdef", "mnopqr.0123456789abcdef"
	exists := apierrors.NewAlreadyExists(secretsGR, "bootstrap-token-abcdef")
	tests := []struct {
		name      string
		host      string
		errs      []error
		wantIDs   []string // ids of the Secrets created, in order
		wantToken string
		wantErr   error
	}{
		{name: "named host", host: host, wantIDs: []string{"abcdef"}, wantToken: tokA},
		{name: "unnamed host", host: "", wantIDs: []string{"abcdef"}, wantToken: tokA},
		{name: "id taken: a new id", host: host, errs: []error{exists}, wantIDs: []string{"abcdef", "ghijkl"}, wantToken: tokB},
		{name: "three ids taken", host: host, errs: []error{exists, exists, exists},
			wantIDs: []string{"abcdef", "ghijkl", "mnopqr"}, wantErr: ErrTokenCollision},
		{name: "transient error: same Secret again", host: host, errs: []error{apierrors.NewServiceUnavailable("starting")},
			wantIDs: []string{"abcdef", "abcdef"}, wantToken: tokA},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSecrets{errs: tc.errs}
			a := &API{Secrets: f, Cluster: cluster, TTL: 5 * time.Minute, Timeout: 10 * time.Second,
				now: func() time.Time { return clock }, generate: scripted(tokA, tokB, tokC)}

			got, err := a.Create(context.Background(), tc.host)

			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Create(%q) error = %v, want %v", tc.host, err, tc.wantErr)
			}
			var ids []string
			for _, s := range f.got {
				ids = append(ids, string(s.Data["token-id"]))
			}
			if !slices.Equal(ids, tc.wantIDs) {
				t.Errorf("Create(%q) created Secrets for ids %q, want %q", tc.host, ids, tc.wantIDs)
			}
			description := "Allow " + tc.host + " to join the cluster"
			if tc.host == "" {
				description = "Allow an unnamed machine to join the cluster"
			}
			for i, s := range f.got {
				checkSecret(t, s, tc.wantIDs[i], wantData(tc.wantIDs[i], "0123456789abcdef", description))
			}
			if tc.wantErr != nil {
				return
			}
			want := Join{APIAddress: cluster.APIAddress, Token: tc.wantToken, CAHash: cluster.CAHash}
			if got != want {
				t.Errorf("Create(%q) = %+v, want %+v", tc.host, got, want)
			}
		})
	}
}

func TestAPICreateFails(t *testing.T) {
	const host = "mlab1-lga01.mlab-oti.measurement-lab.org"
	const secret = "0123456789abcdef"
	forbidden := apierrors.NewForbidden(secretsGR, "bootstrap-token-abcdef", errors.New("RBAC"))
	tests := []struct {
		name        string
		ttl         time.Duration
		generate    func() (string, error)
		errs        []error
		wantCreates int
		wantErr     func(error) bool
	}{
		{name: "forbidden", ttl: time.Minute, errs: []error{forbidden}, wantCreates: 1,
			wantErr: func(err error) bool { return apierrors.IsForbidden(err) && errors.Is(err, forbidden) }},
		{name: "zero TTL", ttl: 0},
		{name: "negative TTL", ttl: -time.Minute},
		{name: "generator fails", ttl: time.Minute, generate: scripted()},
		{name: "malformed token", ttl: time.Minute, generate: scripted("abcdef-" + secret)},
		{name: "upper-case token", ttl: time.Minute, generate: scripted("ABCDEF." + strings.ToUpper(secret))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSecrets{errs: tc.errs}
			generate := tc.generate
			if generate == nil {
				generate = scripted("abcdef." + secret)
			}
			a := &API{Secrets: f, Cluster: cluster, TTL: tc.ttl, now: func() time.Time { return clock }, generate: generate}

			got, err := a.Create(context.Background(), host)

			if err == nil || (tc.wantErr != nil && !tc.wantErr(err)) {
				t.Errorf("Create(%q) error = %v, not the error wanted", host, err)
			}
			if got != (Join{}) {
				t.Errorf("Create(%q) = %+v with an error, want the zero Join", host, got)
			}
			if len(f.got) != tc.wantCreates {
				t.Errorf("Create(%q) made %d create calls, want %d", host, len(f.got), tc.wantCreates)
			}
			if err != nil && strings.Contains(strings.ToLower(err.Error()), secret[:len(secret)-1]) {
				t.Errorf("Create(%q) error %q contains the token secret", host, err)
			}
		})
	}
}

func TestAPICreateTimeout(t *testing.T) {
	tests := []struct {
		name         string
		timeout      time.Duration
		block        bool
		wantDeadline time.Duration // from now; 0 for none
	}{
		{name: "no timeout: the caller's context", timeout: 0},
		{name: "timeout sets a deadline", timeout: time.Minute, wantDeadline: time.Minute},
		{name: "timeout ends a hung create", timeout: 50 * time.Millisecond, block: true, wantDeadline: 50 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSecrets{block: tc.block}
			a := &API{Secrets: f, Cluster: cluster, TTL: time.Minute, Timeout: tc.timeout}
			start := time.Now()
			_, err := a.Create(context.Background(), "")
			elapsed := time.Since(start)
			if tc.block {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Create() error = %v, want a deadline", err)
				}
				if elapsed > tc.timeout+time.Second {
					t.Errorf("Create() returned after %s, want about %s", elapsed, tc.timeout)
				}
			} else if err != nil {
				t.Errorf("Create() error = %v", err)
			}
			if len(f.ctxs) != 1 {
				t.Fatalf("Create() made %d create calls, want 1", len(f.ctxs))
			}
			deadline, ok := f.ctxs[0].Deadline()
			if ok != (tc.wantDeadline > 0) {
				t.Fatalf("create call had a deadline: %t, want %t", ok, tc.wantDeadline > 0)
			}
			if ok {
				if d := deadline.Sub(start); d < tc.wantDeadline || d > tc.wantDeadline+time.Second {
					t.Errorf("create call's deadline was %s after the start, want %s", d, tc.wantDeadline)
				}
			}
		})
	}
}

func TestAPICreateRealGenerator(t *testing.T) {
	f := &fakeSecrets{}
	a := &API{Secrets: f, Cluster: cluster, TTL: time.Minute}
	var toks []string
	for range 2 {
		j, err := a.Create(context.Background(), "mlab1-lga01.mlab-oti.measurement-lab.org")
		if err != nil {
			t.Fatalf("Create() error = %v", err)
		}
		if !joinTokenRE.MatchString(j.Token) {
			t.Errorf("Create() token %q is not of the form [a-z0-9]{6}.[a-z0-9]{16}", j.Token)
		}
		toks = append(toks, j.Token)
	}
	if toks[0] == toks[1] {
		t.Errorf("two Creates gave the same token %q", toks[0])
	}
	for i, s := range f.got {
		if got := string(s.Data["token-id"]) + "." + string(s.Data["token-secret"]); got != toks[i] {
			t.Errorf("Secret %d holds token %q, but Create returned %q", i, got, toks[i])
		}
	}
}

func TestName(t *testing.T) {
	if got := (&API{}).Name(); got != "kube_api" {
		t.Errorf("API.Name() = %q, want kube_api", got)
	}
	if got := (&Kubeadm{}).Name(); got != "kubeadm" {
		t.Errorf("Kubeadm.Name() = %q, want kubeadm", got)
	}
}
