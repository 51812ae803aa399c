package storage_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"cloud.google.com/go/datastore"

	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/storage"
)

var (
	_ storage.Resolver = (*net.Resolver)(nil)
	_ storage.Resolver = (*fakeResolver)(nil)
	_ storage.Client   = (*datastore.Client)(nil)
	_ storage.Client   = (*fakeClient)(nil)
)

// password looks like what stage 1 sends: 20 characters of [A-Za-z0-9].
const password = "Qx7mN2pL9vR4tY8wK3zB"

// fakeResolver answers every lookup with addrs and err, and records hosts.
type fakeResolver struct {
	addrs []string
	err   error

	mu    sync.Mutex
	hosts []string
}

func (r *fakeResolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	r.mu.Lock()
	r.hosts = append(r.hosts, host)
	r.mu.Unlock()
	return r.addrs, r.err
}

// put is one recorded Client.Put.
type put struct {
	key *datastore.Key
	src interface{}
}

// fakeClient records writes and fails them with putErr; Close returns closeErr.
type fakeClient struct {
	project  string
	putErr   error
	closeErr error

	mu     sync.Mutex
	puts   []put
	closes int
}

func (c *fakeClient) Put(ctx context.Context, key *datastore.Key, src interface{}) (*datastore.Key, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.puts = append(c.puts, put{key: key, src: src})
	if c.putErr != nil {
		return nil, c.putErr
	}
	return key, nil
}

func (c *fakeClient) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closes++
	return c.closeErr
}

// factory opens fakeClients and records each opening.
type factory struct {
	newErr   error
	putErr   error
	closeErr map[string]error // by project

	mu       sync.Mutex
	projects []string
	ctxs     []context.Context
	clients  map[string]*fakeClient
}

func (f *factory) NewClient(ctx context.Context, project string) (storage.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.projects = append(f.projects, project)
	f.ctxs = append(f.ctxs, ctx)
	if f.newErr != nil {
		return nil, f.newErr
	}
	c := &fakeClient{project: project, putErr: f.putErr, closeErr: f.closeErr[project]}
	if f.clients == nil {
		f.clients = make(map[string]*fakeClient)
	}
	f.clients[project] = c
	return c, nil
}

func (f *factory) opened() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.projects)
}

func (f *factory) client(project string) *fakeClient {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.clients[project]
}

var sandboxBMC = hostname.BMC{Hostname: "mlab1d-lga01.mlab-sandbox.measurement-lab.org", Project: "mlab-sandbox"}

func TestStorePut(t *testing.T) {
	errLookup := &net.DNSError{Err: "no such host", Name: sandboxBMC.Hostname, IsNotFound: true}
	errNew := errors.New("dialing: credentials: could not find default credentials")
	errPut := errors.New("rpc error: code = PermissionDenied")
	tests := []struct {
		name        string
		project     string // Store.Project
		addrs       []string
		lookupErr   error
		newErr      error
		putErr      error
		wantProject string   // project a client was opened for; "" for none
		wantErrIs   []error  // each must be wrapped
		wantErrIn   []string // substrings of the error text
	}{
		{
			name:        "project from the hostname, first address",
			addrs:       []string{"192.0.2.11", "2001:db8::11"},
			wantProject: "mlab-sandbox",
		},
		{
			name:        "project override",
			project:     "mlab-oti",
			addrs:       []string{"192.0.2.11"},
			wantProject: "mlab-oti",
		},
		{
			name:      "lookup failure",
			lookupErr: errLookup,
			wantErrIs: []error{hostname.ErrResolve, errLookup},
			wantErrIn: []string{sandboxBMC.Hostname},
		},
		{
			name:      "no addresses",
			addrs:     []string{},
			wantErrIs: []error{hostname.ErrResolve},
			wantErrIn: []string{sandboxBMC.Hostname},
		},
		{
			name:        "client cannot be opened",
			addrs:       []string{"192.0.2.11"},
			newErr:      errNew,
			wantProject: "mlab-sandbox",
			wantErrIs:   []error{errNew},
			wantErrIn:   []string{"mlab-sandbox"},
		},
		{
			name:        "write fails",
			addrs:       []string{"192.0.2.11"},
			putErr:      errPut,
			wantProject: "mlab-sandbox",
			wantErrIs:   []error{errPut},
			wantErrIn:   []string{sandboxBMC.Hostname, "mlab-sandbox"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakeResolver{addrs: tc.addrs, err: tc.lookupErr}
			f := &factory{newErr: tc.newErr, putErr: tc.putErr}
			s := &storage.Store{Resolver: r, NewClient: f.NewClient, Project: tc.project}
			defer s.Close()

			err := s.Put(context.Background(), sandboxBMC, password)

			if !slices.Equal(r.hosts, []string{sandboxBMC.Hostname}) {
				t.Errorf("Put looked up %q, want %q", r.hosts, sandboxBMC.Hostname)
			}
			var wantOpened []string
			if tc.wantProject != "" {
				wantOpened = []string{tc.wantProject}
			}
			if got := f.opened(); !slices.Equal(got, wantOpened) {
				t.Errorf("Put opened clients for projects %q, want %q", got, wantOpened)
			}
			if len(tc.wantErrIs) == 0 {
				if err != nil {
					t.Fatalf("Put error = %v, want nil", err)
				}
				checkWrite(t, f.client(tc.wantProject), sandboxBMC.Hostname, tc.addrs[0])
				return
			}
			if err == nil {
				t.Fatalf("Put error = nil, want one wrapping %v", tc.wantErrIs)
			}
			for _, target := range tc.wantErrIs {
				if !errors.Is(err, target) {
					t.Errorf("Put error = %v, want one wrapping %v", err, target)
				}
			}
			for _, s := range tc.wantErrIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Put error = %q, want it to name %q", err, s)
				}
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("Put error = %q contains the password", err)
			}
		})
	}
}

// checkWrite fails unless c received exactly one write: the reboot service's
// entity for bmcHost at address.
func checkWrite(t *testing.T, c *fakeClient, bmcHost, address string) {
	t.Helper()
	if c == nil {
		t.Fatal("no client was opened")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.puts) != 1 {
		t.Fatalf("client for %s got %d writes, want 1", c.project, len(c.puts))
	}
	p := c.puts[0]
	wantKey := datastore.NameKey("Credentials", bmcHost, nil)
	wantKey.Namespace = "reboot-api"
	if !p.key.Equal(wantKey) || p.key.Parent != nil {
		t.Errorf("Put key = %v (kind %q, name %q, namespace %q), want %v (namespace %q)",
			p.key, p.key.Kind, p.key.Name, p.key.Namespace, wantKey, wantKey.Namespace)
	}
	want := &storage.Credentials{
		Hostname: bmcHost,
		Username: "admin",
		Password: password,
		Model:    "DRAC",
		Address:  address,
	}
	got, ok := p.src.(*storage.Credentials)
	if !ok {
		t.Fatalf("Put entity is a %T, want *storage.Credentials", p.src)
	}
	if *got != *want {
		t.Errorf("Put entity = %+v, want %+v", *got, *want)
	}
	// The property names are what the reboot service reads.
	props, err := datastore.SaveStruct(got)
	if err != nil {
		t.Fatalf("datastore.SaveStruct(%+v): %v", got, err)
	}
	gotProps := map[string]interface{}{}
	for _, pr := range props {
		gotProps[pr.Name] = pr.Value
	}
	wantProps := map[string]interface{}{
		"hostname": bmcHost, "username": "admin", "password": password, "model": "DRAC", "address": address,
	}
	if fmt.Sprint(gotProps) != fmt.Sprint(wantProps) {
		t.Errorf("stored properties = %v, want exactly %v", gotProps, wantProps)
	}
}

// TestStoreClientOutlivesRequest checks that a client is not opened with the
// request's context, which ends with the request.
func TestStoreClientOutlivesRequest(t *testing.T) {
	f := &factory{}
	s := &storage.Store{Resolver: &fakeResolver{addrs: []string{"192.0.2.11"}}, NewClient: f.NewClient}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Put(ctx, sandboxBMC, password); err != nil {
		t.Fatalf("Put error = %v, want nil", err)
	}
	cancel()
	if len(f.ctxs) != 1 {
		t.Fatalf("NewClient called %d times, want 1", len(f.ctxs))
	}
	if err := f.ctxs[0].Err(); err != nil {
		t.Errorf("the client's context ended with the request (%v), want it to outlive it", err)
	}
}

func TestStoreReusesClients(t *testing.T) {
	f := &factory{}
	s := &storage.Store{Resolver: &fakeResolver{addrs: []string{"192.0.2.11"}}, NewClient: f.NewClient}
	defer s.Close()
	bmcs := []hostname.BMC{
		sandboxBMC,
		{Hostname: "mlab2d-lga01.mlab-sandbox.measurement-lab.org", Project: "mlab-sandbox"},
		{Hostname: "mlab1d-lga01.mlab-oti.measurement-lab.org", Project: "mlab-oti"},
	}
	const perBMC = 100
	var wg sync.WaitGroup
	errs := make(chan error, perBMC*len(bmcs))
	for range perBMC {
		for _, b := range bmcs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := s.Put(context.Background(), b, password); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Put error = %v, want nil", err)
	}
	got := f.opened()
	slices.Sort(got)
	if want := []string{"mlab-oti", "mlab-sandbox"}; !slices.Equal(got, want) {
		t.Errorf("NewClient called for %q, want once each for %q", got, want)
	}
	for project, want := range map[string]int{"mlab-sandbox": 2 * perBMC, "mlab-oti": perBMC} {
		c := f.client(project)
		if c == nil {
			t.Errorf("no client for %s", project)
			continue
		}
		if n := len(c.puts); n != want {
			t.Errorf("client for %s got %d writes, want %d", project, n, want)
		}
	}
}

func TestStoreProjectLimit(t *testing.T) {
	const maxProjects = 8
	f := &factory{}
	s := &storage.Store{Resolver: &fakeResolver{addrs: []string{"192.0.2.11"}}, NewClient: f.NewClient}
	defer s.Close()
	bmcIn := func(i int) hostname.BMC {
		return hostname.BMC{Hostname: "mlab1d-lga01.p" + fmt.Sprint(i) + ".measurement-lab.org", Project: "p" + fmt.Sprint(i)}
	}
	for i := range maxProjects {
		if err := s.Put(context.Background(), bmcIn(i), password); err != nil {
			t.Fatalf("Put in project %d of %d: %v, want nil", i+1, maxProjects, err)
		}
	}
	err := s.Put(context.Background(), bmcIn(maxProjects), password)
	if err == nil {
		t.Errorf("Put in project %d error = nil, want a refusal", maxProjects+1)
	} else if strings.Contains(err.Error(), password) {
		t.Errorf("Put error = %q contains the password", err)
	}
	if n := len(f.opened()); n != maxProjects {
		t.Errorf("NewClient called %d times, want %d", n, maxProjects)
	}
	// Projects already open keep working.
	if err := s.Put(context.Background(), bmcIn(0), password); err != nil {
		t.Errorf("Put in an open project after the limit: %v, want nil", err)
	}
}

func TestStoreClose(t *testing.T) {
	errA := errors.New("closing a")
	errB := errors.New("closing b")
	f := &factory{closeErr: map[string]error{"a": errA, "b": errB}}
	s := &storage.Store{Resolver: &fakeResolver{addrs: []string{"192.0.2.11"}}, NewClient: f.NewClient}
	projects := []string{"a", "b", "c"}
	for _, p := range projects {
		b := hostname.BMC{Hostname: "mlab1d-lga01." + p + ".measurement-lab.org", Project: p}
		if err := s.Put(context.Background(), b, password); err != nil {
			t.Fatalf("Put in project %s: %v, want nil", p, err)
		}
	}

	err := s.Close()

	for _, target := range []error{errA, errB} {
		if !errors.Is(err, target) {
			t.Errorf("Close error = %v, want one wrapping %v", err, target)
		}
	}
	for _, p := range projects {
		if n := f.client(p).closes; n != 1 {
			t.Errorf("client for %s closed %d times, want 1", p, n)
		}
	}
	err = s.Put(context.Background(), sandboxBMC, password)
	if err == nil {
		t.Error("Put after Close error = nil, want an error")
	} else if strings.Contains(err.Error(), password) {
		t.Errorf("Put after Close error = %q contains the password", err)
	}
	if n := len(f.opened()); n != len(projects) {
		t.Errorf("NewClient called %d times (Put after Close opened one?), want %d", n, len(projects))
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close error = %v, want nil", err)
	}
	for _, p := range projects {
		if n := f.client(p).closes; n != 1 {
			t.Errorf("after a second Close, client for %s closed %d times, want 1", p, n)
		}
	}
}

func TestStoreCloseUnused(t *testing.T) {
	f := &factory{}
	s := &storage.Store{Resolver: &fakeResolver{addrs: []string{"192.0.2.11"}}, NewClient: f.NewClient}
	if err := s.Close(); err != nil {
		t.Errorf("Close of an unused Store error = %v, want nil", err)
	}
	if err := s.Put(context.Background(), sandboxBMC, password); err == nil {
		t.Error("Put after Close error = nil, want an error")
	}
	if n := len(f.opened()); n != 0 {
		t.Errorf("NewClient called %d times after Close, want 0", n)
	}
}

// TestPutNeedsProject checks that a v1 name, which names no project, is
// stored in the Store's project, and refused before any lookup without one.
func TestPutNeedsProject(t *testing.T) {
	bmc, err := hostname.ParseBMC("mlab1.lga01.measurement-lab.org")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		project     string
		wantErr     error
		wantLookups int
		wantProject string
	}{
		{"no project anywhere", "", hostname.ErrNotMachine, 0, ""},
		{"the store's project", "mlab-oti", nil, 1, "mlab-oti"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakeResolver{addrs: []string{"192.0.2.1"}}
			var opened []string
			s := &storage.Store{Resolver: r, Project: tc.project, NewClient: func(_ context.Context, p string) (storage.Client, error) {
				opened = append(opened, p)
				return &fakeClient{project: p}, nil
			}}
			err := s.Put(context.Background(), bmc, "secret")
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("Put() error = %v, want %v", err, tc.wantErr)
			}
			if len(r.hosts) != tc.wantLookups {
				t.Errorf("%d DNS lookups, want %d", len(r.hosts), tc.wantLookups)
			}
			if tc.wantProject != "" && (len(opened) != 1 || opened[0] != tc.wantProject) {
				t.Errorf("opened clients for %v, want [%s]", opened, tc.wantProject)
			}
		})
	}
}
