package token_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/token"
	"github.com/m-lab/epoxy-extensions/token/internal/fakecluster"
	"github.com/m-lab/epoxy-extensions/token/kubeapi"
)

var (
	slotsCluster = kube.Cluster{APIAddress: "api.mlab-sandbox.measurement-lab.org:6443", CAHash: "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
	// A quarter past seven in the evening in New York, 00:15 the next day in UTC.
	clock = time.Date(2026, 11, 20, 19, 15, 30, 999, time.FixedZone("EST", -5*3600))
)

const (
	slotHost  = "mlab1-lga01.mlab-oti.measurement-lab.org"
	otherHost = "mlab2-lga01.mlab-oti.measurement-lab.org"
)

// newSlots returns token.Slots with the api store over a fake cluster, a limit
// of max per host and 2 for unnamed hosts, and a clock fixed at clock.
func newSlots(max int) (*token.Slots, *fakecluster.Cluster) {
	now := func() time.Time { return clock }
	f := fakecluster.New(now)
	return &token.Slots{
		Store:      &kubeapi.Store{Secrets: f, Cluster: kube.NewClusterValue(slotsCluster), Timeout: 10 * time.Second},
		Max:        max,
		MaxUnnamed: 2,
		TTL:        5 * time.Minute,
		Now:        now,
	}, f
}

func TestSlotID(t *testing.T) {
	idRE := regexp.MustCompile(`^[a-z0-9]{6}$`)
	seen := map[string]string{}
	for h := range 2000 {
		for i := range 3 {
			host := fmt.Sprintf("mlab%d-abc%02d.mlab-oti.measurement-lab.org", h%4+1, h/4)
			id := token.SlotID(host, i)
			if !idRE.MatchString(id) {
				t.Fatalf("SlotID(%q, %d) = %q, want [a-z0-9]{6}", host, i, id)
			}
			if again := token.SlotID(host, i); again != id {
				t.Fatalf("SlotID(%q, %d) = %q then %q, want the same", host, i, id, again)
			}
			key := fmt.Sprintf("%s/%d", host, i)
			if prev, ok := seen[id]; ok {
				t.Errorf("SlotID(%s) = token.SlotID(%s) = %q", key, prev, id)
			}
			seen[id] = key
		}
	}
	if token.SlotID("", 0) == token.SlotID("", 1) {
		t.Errorf("the unnamed host's slots 0 and 1 share an id")
	}
}

func TestSlotsCreate(t *testing.T) {
	live, expired := clock.Add(time.Minute), clock.Add(-time.Second)
	tests := []slotCase{
		{name: "empty: slot 0", host: slotHost, max: 3, wantSlot: 0, wantLive: 1},
		{name: "slot 0 live: slot 1", host: slotHost, max: 3, wantSlot: 1, wantLive: 2,
			setup: func(f *fakecluster.Cluster) {
				f.Put(token.SlotID(slotHost, 0), "aaaaaaaaaaaaaaaa", token.Description(slotHost), live)
			}},
		{name: "all slots live: refused until the oldest expires", host: slotHost, max: 2, wantSlot: -1, wantLive: 2,
			setup: func(f *fakecluster.Cluster) {
				f.Put(token.SlotID(slotHost, 0), "aaaaaaaaaaaaaaaa", token.Description(slotHost), live.Add(time.Minute))
				f.Put(token.SlotID(slotHost, 1), "bbbbbbbbbbbbbbbb", token.Description(slotHost), live)
			}, retryAt: live},
		{name: "expired token of the host is replaced", host: slotHost, max: 1, wantSlot: 0, wantLive: 1,
			setup: func(f *fakecluster.Cluster) {
				f.Put(token.SlotID(slotHost, 0), "aaaaaaaaaaaaaaaa", token.Description(slotHost), expired)
			}},
		{name: "another host's live token in slot 0 is left alone", host: slotHost, max: 2, wantSlot: 1, wantLive: 1,
			setup: func(f *fakecluster.Cluster) {
				f.Put(token.SlotID(slotHost, 0), "aaaaaaaaaaaaaaaa", token.Description(otherHost), live)
			},
			wantKept: []string{token.SlotID(slotHost, 0)}},
		{name: "another host's expired token is left alone too", host: slotHost, max: 2, wantSlot: 1, wantLive: 1,
			setup: func(f *fakecluster.Cluster) {
				f.Put(token.SlotID(slotHost, 0), "aaaaaaaaaaaaaaaa", token.Description(otherHost), expired)
			},
			wantKept: []string{token.SlotID(slotHost, 0)}},
		{name: "a slot held by another host is not counted", host: slotHost, max: 1, wantSlot: -1, wantLive: 0,
			setup: func(f *fakecluster.Cluster) {
				f.Put(token.SlotID(slotHost, 0), "aaaaaaaaaaaaaaaa", token.Description(otherHost), live)
			},
			wantKept: []string{token.SlotID(slotHost, 0)}, retryAt: clock.Add(5 * time.Minute)},
		{name: "unnamed hosts have their own limit", host: "", max: 1, wantSlot: 1, wantLive: 2,
			setup: func(f *fakecluster.Cluster) {
				f.Put(token.SlotID("", 0), "aaaaaaaaaaaaaaaa", token.Description(""), live)
			}},
		{name: "unnamed hosts refused at their limit", host: "", max: 5, wantSlot: -1, wantLive: 2,
			setup: func(f *fakecluster.Cluster) {
				f.Put(token.SlotID("", 0), "aaaaaaaaaaaaaaaa", token.Description(""), live)
				f.Put(token.SlotID("", 1), "bbbbbbbbbbbbbbbb", token.Description(""), live)
			}, retryAt: live},
	}
	for _, tc := range tests {
		for _, lister := range []bool{false, true} {
			name := tc.name
			if lister {
				name += " (slots read first)"
			}
			t.Run(name, func(t *testing.T) { testSlotsCreate(t, tc, lister) })
		}
	}
}

// listerAPI is the api store read as the exec store reads it: every slot
// of a host first, in one call.
type listerAPI struct{ *kubeapi.Store }

var _ token.Lister = listerAPI{}

func (l listerAPI) GetAll(ctx context.Context, ids []string) (map[string]token.Slot, error) {
	m := map[string]token.Slot{}
	for _, id := range ids {
		s, found, err := l.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if found {
			m[id] = s
		}
	}
	return m, nil
}

// slotCase is a cluster state, a request for a host, and its outcome.
type slotCase struct {
	name     string
	host     string
	max      int
	setup    func(f *fakecluster.Cluster)
	wantSlot int // slot the new token lands in; -1 for a refusal
	wantLive int // the host's live tokens afterwards
	wantKept []string
	retryAt  time.Time
}

func testSlotsCreate(t *testing.T, tc slotCase, lister bool) {
	s, f := newSlots(tc.max)
	if lister {
		s.Store = listerAPI{s.Store.(*kubeapi.Store)}
	}
	if tc.setup != nil {
		tc.setup(f)
	}
	kept := map[string]string{}
	for _, id := range tc.wantKept {
		kept[id] = f.Secret(id).ResourceVersion
	}
	join, err := s.Create(context.Background(), tc.host)
	if tc.wantSlot < 0 {
		var limit *token.LimitError
		if !errors.As(err, &limit) || !errors.Is(err, token.ErrLimit) {
			t.Fatalf("Create(%q) error = %v, want a LimitError", tc.host, err)
		}
		if d := limit.RetryAt.Sub(tc.retryAt); d < -time.Second || d > time.Second { // expirations are whole seconds
			t.Errorf("RetryAt = %s, want %s", limit.RetryAt, tc.retryAt)
		}
	} else {
		if err != nil {
			t.Fatalf("Create(%q) error = %v", tc.host, err)
		}
		id, secret, _ := strings.Cut(join.Token, ".")
		if want := token.SlotID(tc.host, tc.wantSlot); id != want {
			t.Errorf("token id = %q, want slot %d's %q", id, tc.wantSlot, want)
		}
		if got := string(f.Secret(id).Data["token-secret"]); got != secret {
			t.Errorf("the Secret of %s does not hold the token returned", id)
		}
		if join.APIAddress != slotsCluster.APIAddress || join.CAHash != slotsCluster.CAHash {
			t.Errorf("join = %+v, want the cluster's address and CA hash", join)
		}
	}
	if got := f.Live(clock)[token.Description(tc.host)]; got != tc.wantLive {
		t.Errorf("live tokens of %q = %d, want %d", tc.host, got, tc.wantLive)
	}
	for id, rv := range kept {
		if s := f.Secret(id); s == nil || s.ResourceVersion != rv {
			t.Errorf("Secret %s was changed or deleted, want it left alone", id)
		}
	}
}

func TestSlotsNoLimitUsesRandomIDs(t *testing.T) {
	s, f := newSlots(0)
	for range 5 {
		if _, err := s.Create(context.Background(), slotHost); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.Live(clock)[token.Description(slotHost)]; got != 5 {
		t.Errorf("live tokens = %d, want 5 without a limit", got)
	}
}

// errStreamReset is a transport failure that is not retried: whether the
// kubeapi.Store server stored the Secret is unknown.
var errStreamReset = errors.New("http2: stream reset")

func TestSlotsFailures(t *testing.T) {
	forbidden := apierrors.NewForbidden(fakecluster.GR, "x", errors.New("RBAC"))
	tests := []struct {
		name     string
		ttl      time.Duration
		hook     func(op string) error
		lost     []error
		wantErr  func(error) bool
		wantLive int
	}{
		{name: "zero TTL", ttl: 0, wantErr: func(err error) bool { return err != nil }},
		{name: "forbidden create", ttl: time.Minute, hook: func(op string) error {
			if op == "create" {
				return forbidden
			}
			return nil
		}, wantErr: apierrors.IsForbidden},
		{name: "lost answer, retried: the stored Secret is ours", ttl: time.Minute,
			lost: []error{apierrors.NewServiceUnavailable("lost")}, wantLive: 1},
		{name: "stored, then the answer lost for good: removed again", ttl: time.Minute,
			lost: []error{errStreamReset}, wantErr: func(err error) bool { return errors.Is(err, errStreamReset) }},
		{name: "get fails after a taken slot", ttl: time.Minute, hook: func(op string) error {
			if op == "get" {
				return forbidden
			}
			return nil
		}, wantErr: apierrors.IsForbidden, wantLive: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, f := newSlots(3)
			s.TTL = tc.ttl
			if tc.name == "get fails after a taken slot" {
				f.Put(token.SlotID(slotHost, 0), "aaaaaaaaaaaaaaaa", token.Description(slotHost), clock.Add(time.Minute))
			}
			if tc.hook != nil {
				f.Hook = func(op, _ string) error { return tc.hook(op) }
			}
			f.StoreThenFail = tc.lost
			_, err := s.Create(context.Background(), slotHost)
			if tc.wantErr == nil && err != nil {
				t.Fatalf("Create() error = %v", err)
			}
			if tc.wantErr != nil && !tc.wantErr(err) {
				t.Errorf("Create() error = %v, not the one wanted", err)
			}
			if err != nil && strings.Contains(err.Error(), "0123456789") {
				t.Errorf("error %q may hold a token secret", err)
			}
			if got := f.Live(clock)[token.Description(slotHost)]; got != tc.wantLive {
				t.Errorf("live tokens = %d, want %d: no orphan, no double count", got, tc.wantLive)
			}
		})
	}
}

// TestSlotsRaceOnExpiredSlot has another replica replace the host's
// expired token between this one reading it and deleting it: the delete's
// precondition fails, and this replica moves on to the next slot instead
// of deleting the other's fresh token.
func TestSlotsRaceOnExpiredSlot(t *testing.T) {
	for _, lister := range []bool{false, true} {
		t.Run(fmt.Sprintf("slots read first: %t", lister), func(t *testing.T) { testSlotsRaceOnExpiredSlot(t, lister) })
	}
}

func testSlotsRaceOnExpiredSlot(t *testing.T, lister bool) {
	s, f := newSlots(2)
	if lister {
		s.Store = listerAPI{s.Store.(*kubeapi.Store)}
	}
	id := token.SlotID(slotHost, 0)
	f.Put(id, "aaaaaaaaaaaaaaaa", token.Description(slotHost), clock.Add(-time.Second))
	raced := false
	f.Hook = func(op, name string) error {
		if op == "delete" && !raced {
			raced = true
			// The other replica frees the slot and fills it first.
			f.Mu.Lock()
			delete(f.Secrets, "bootstrap-token-"+id)
			f.Mu.Unlock()
			f.Put(id, "cccccccccccccccc", token.Description(slotHost), clock.Add(5*time.Minute))
		}
		return nil
	}
	join, err := s.Create(context.Background(), slotHost)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := join.Token[:6], token.SlotID(slotHost, 1); got != want {
		t.Errorf("token id = %q, want slot 1's %q", got, want)
	}
	if got := f.Live(clock)[token.Description(slotHost)]; got != 2 {
		t.Errorf("live tokens = %d, want 2 (one per replica)", got)
	}
}

// TestSlotsConcurrentReplicas has three replicas, each its own token.Slots over
// one cluster, serve 30 requests of one host at once: exactly the limit
// gets tokens, every other request is refused, on every run.
func TestSlotsConcurrentReplicas(t *testing.T) {
	const max, n = 3, 30
	_, f := newSlots(max)
	replicas := make([]*token.Slots, 3)
	for i := range replicas {
		replicas[i], _ = newSlots(max)
		replicas[i].Store = &kubeapi.Store{Secrets: f, Cluster: kube.NewClusterValue(slotsCluster), Timeout: 10 * time.Second}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, limited := 0, 0
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := replicas[i%3].Create(context.Background(), slotHost)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, token.ErrLimit):
				limited++
			default:
				t.Errorf("Create() error = %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != max || limited != n-max {
		t.Errorf("%d tokens and %d refusals, want %d and %d", ok, limited, max, n-max)
	}
	if got := f.Live(clock)[token.Description(slotHost)]; got != max {
		t.Errorf("live tokens = %d, want %d", got, max)
	}
}

func TestSlotsRevoke(t *testing.T) {
	s, f := newSlots(3)
	f.Put(token.SlotID(slotHost, 0), "aaaaaaaaaaaaaaaa", token.Description(slotHost), clock.Add(time.Minute)) // created a minute ago
	f.Put(token.SlotID(slotHost, 1), "bbbbbbbbbbbbbbbb", token.Description(otherHost), clock.Add(time.Minute))
	if _, err := s.Create(context.Background(), slotHost); err != nil { // slot 2, created now
		t.Fatal(err)
	}
	n, err := s.Revoke(context.Background(), slotHost, clock.Add(-30*time.Second))
	if err != nil || n != 1 {
		t.Errorf("Revoke(before 30 s ago) = %d, %v; want 1 (only the older token)", n, err)
	}
	if f.Secret(token.SlotID(slotHost, 2)) == nil {
		t.Errorf("the token created after the cut-off was revoked")
	}
	n, err = s.Revoke(context.Background(), slotHost, time.Time{})
	if err != nil || n != 1 {
		t.Errorf("Revoke(all) = %d, %v; want 1", n, err)
	}
	if f.Secret(token.SlotID(slotHost, 1)) == nil {
		t.Errorf("another host's token in the host's slot was revoked")
	}
	if got := f.Live(clock)[token.Description(slotHost)]; got != 0 {
		t.Errorf("live tokens = %d after Revoke, want 0", got)
	}
}

// countingLister counts GetAll calls of the api store read as a token.Lister.
type countingLister struct {
	listerAPI
	mu    sync.Mutex
	lists [][]string
}

func (c *countingLister) GetAll(ctx context.Context, ids []string) (map[string]token.Slot, error) {
	c.mu.Lock()
	c.lists = append(c.lists, ids)
	c.mu.Unlock()
	return c.listerAPI.GetAll(ctx, ids)
}

// TestSlotsCreateReadsOnlyWhenTaken checks the calls a Create makes with a
// token.Lister (the exec store, one process per call): a host without a live
// token costs one create and no read; a host whose slot 0 is taken, one
// read of the other slots, at once.
func TestSlotsCreateReadsOnlyWhenTaken(t *testing.T) {
	live := clock.Add(time.Minute)
	tests := []struct {
		name      string
		taken     int // slots 0..taken-1 hold live tokens of the host
		wantCalls []string
		wantLists int
	}{
		{"fresh host: one create", 0, []string{"create 0"}, 0},
		{"slot 0 taken: one read, then slot 1", 1, []string{"create 0", "create 1"}, 1},
		{"all taken: one read, no more creates", 3, []string{"create 0"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, f := newSlots(3)
			l := &countingLister{listerAPI: listerAPI{s.Store.(*kubeapi.Store)}}
			s.Store = l
			for i := range tc.taken {
				f.Put(token.SlotID(slotHost, i), "aaaaaaaaaaaaaaaa", token.Description(slotHost), live)
			}
			f.Calls = nil
			s.Create(context.Background(), slotHost)
			var got []string
			for _, c := range f.Calls {
				if op, name, _ := strings.Cut(c, " "); op == "create" {
					for i := range 3 {
						if name == "bootstrap-token-"+token.SlotID(slotHost, i) {
							got = append(got, fmt.Sprintf("create %d", i))
						}
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantCalls) {
				t.Errorf("creates %v, want %v", got, tc.wantCalls)
			}
			if len(l.lists) != tc.wantLists {
				t.Errorf("%d reads of the slots (%v), want %d", len(l.lists), l.lists, tc.wantLists)
			}
		})
	}
}
