package kubeapi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/token"
	"github.com/m-lab/epoxy-extensions/token/internal/fakecluster"
)

var (
	joinTokenRE = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)
	cluster     = kube.Cluster{APIAddress: "api.mlab-sandbox.measurement-lab.org:6443", CAHash: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
	// A quarter past seven in the evening in New York, 00:15 the next day in UTC.
	clock = time.Date(2026, 11, 20, 19, 15, 30, 999, time.FixedZone("EST", -5*3600))
)

const (
	slotHost  = "mlab1-lga01.mlab-oti.measurement-lab.org"
	otherHost = "mlab2-lga01.mlab-oti.measurement-lab.org"
)

// newSlots returns Slots with this store over a fake cluster, a limit of
// max per host and 2 for unnamed hosts, and a clock fixed at clock.
func newSlots(max int) (*token.Slots, *fakecluster.Cluster) {
	now := func() time.Time { return clock }
	f := fakecluster.New(now)
	return &token.Slots{
		Store:      &Store{Secrets: f, Cluster: kube.NewClusterValue(cluster), Timeout: 10 * time.Second},
		Max:        max,
		MaxUnnamed: 2,
		TTL:        5 * time.Minute,
		Now:        now,
	}, f
}

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

func TestName(t *testing.T) {
	if got := (&Store{}).Name(); got != "kube_api" {
		t.Errorf("Store.Name() = %q, want kube_api", got)
	}
}

func TestMayBeStored(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"throttled by the client", fmt.Errorf("x: %w", kube.ErrOverloaded), false},
		{"forbidden", apierrors.NewForbidden(fakecluster.GR, "x", errors.New("RBAC")), false},
		{"invalid", apierrors.NewBadRequest("bad"), false},
		{"server error", apierrors.NewInternalError(errors.New("etcd")), true},
		{"timeout", apierrors.NewTimeoutError("slow", 1), true},
		{"deadline", context.DeadlineExceeded, true},
		{"transport", errors.New("connection reset"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := mayBeStored(tc.err); got != tc.want {
				t.Errorf("mayBeStored(%v) = %t, want %t", tc.err, got, tc.want)
			}
		})
	}
}

// TestAPISecretIsKubeadms checks the Secret a token is stored as: exactly
// kubeadm's, with the slot's id and the generator's secret, and the token
// returned is the one stored. Generator failures and malformed tokens are
// errors that never quote the token.
func TestAPISecretIsKubeadms(t *testing.T) {
	const secret = "0123456789abcdef"
	tests := []struct {
		name     string
		host     string
		generate func() (string, error)
		wantErr  bool
	}{
		{name: "named host", host: slotHost, generate: scripted("zzzzzz." + secret)},
		{name: "unnamed host", host: "", generate: scripted("zzzzzz." + secret)},
		{name: "generator fails", host: slotHost, generate: scripted(), wantErr: true},
		{name: "malformed token", host: slotHost, generate: scripted("zzzzzz-" + secret), wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, f := newSlots(3)
			s.Generate = tc.generate
			join, err := s.Create(context.Background(), tc.host)
			if tc.wantErr {
				if err == nil || strings.Contains(err.Error(), secret) {
					t.Errorf("Create() error = %v, want one without the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			id := token.SlotID(tc.host, 0)
			if want := id + "." + secret; join.Token != want || !joinTokenRE.MatchString(join.Token) {
				t.Errorf("token = %q, want %q", join.Token, want)
			}
			checkSecret(t, f.Secret(id), id, wantData(id, secret, token.Description(tc.host)))
		})
	}
}

// BenchmarkAPICreate measures what the api backend adds to each token
// request besides the Store round trips: a crypto-random token, its slot id,
// the Secret, and the call's metrics, against an in-memory cluster.
func BenchmarkAPICreate(b *testing.B) {
	f := fakecluster.New(time.Now)
	s := &token.Slots{
		Store: &Store{Secrets: f, Cluster: kube.NewClusterValue(kube.Cluster{APIAddress: "192.0.2.1:6443", CAHash: "sha256:00"}), Timeout: 30 * time.Second},
		Max:   3,
		TTL:   5 * time.Minute,
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Create(ctx, "mlab1-lga01.mlab-oti.measurement-lab.org"); err != nil {
			b.Fatal(err)
		}
		f.Mu.Lock()
		clear(f.Secrets) // a fresh host each time: the common case
		f.Mu.Unlock()
	}
}
