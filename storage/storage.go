// Package storage keeps BMC (iDRAC) credentials in Google Cloud Datastore, in
// the schema the M-Lab reboot service reads.
package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"cloud.google.com/go/datastore"

	"github.com/m-lab/epoxy-extensions/hostname"
)

// The reboot service's schema.
const (
	Namespace = "reboot-api"
	Kind      = "Credentials"
	Username  = "admin"
	Model     = "DRAC"
)

// maxProjects bounds the Datastore clients kept open. M-Lab has a handful of
// projects; a caller naming endless made-up ones must not grow the server.
const maxProjects = 8

// Credentials is one BMC's entity, as the reboot service reads it.
type Credentials struct {
	Hostname string `datastore:"hostname"`
	Username string `datastore:"username"`
	Password string `datastore:"password"`
	Model    string `datastore:"model"`
	Address  string `datastore:"address"`
}

// Resolver looks up the addresses of a host.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Client is the part of a Datastore client that Store uses.
type Client interface {
	Put(ctx context.Context, key *datastore.Key, src interface{}) (*datastore.Key, error)
	Close() error
}

// NewDatastoreClient opens a real Datastore client for project. It honours
// DATASTORE_EMULATOR_HOST, as the library does.
func NewDatastoreClient(ctx context.Context, project string) (Client, error) {
	return datastore.NewClient(ctx, project)
}

// Store writes BMC credentials to Datastore. It keeps one client per project,
// opened on first use and reused until Close.
type Store struct {
	// Resolver finds the BMC's address.
	Resolver Resolver
	// NewClient opens a client for a project; NewDatastoreClient in production.
	NewClient func(ctx context.Context, project string) (Client, error)
	// Project, when set, overrides the project named in hostnames.
	Project string

	mu      sync.Mutex
	clients map[string]Client
	closed  bool
}

// Put stores password as the credentials of bmc, replacing what was there.
// ctx bounds both the DNS lookup and the Datastore write. A BMC whose name
// gives no project (a v1 name) needs Store's Project; without it, Put fails
// with hostname.ErrNotMachine before any lookup.
func (s *Store) Put(ctx context.Context, bmc hostname.BMC, password string) error {
	project := bmc.Project
	if s.Project != "" {
		project = s.Project
	}
	if project == "" {
		return fmt.Errorf("%w: %s names no Google Cloud project (set -datastore-project)", hostname.ErrNotMachine, bmc.Hostname)
	}
	addrs, err := s.Resolver.LookupHost(ctx, bmc.Hostname)
	if err != nil {
		return fmt.Errorf("%w %s: %w", hostname.ErrResolve, bmc.Hostname, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%w %s: no addresses", hostname.ErrResolve, bmc.Hostname)
	}
	client, err := s.client(project)
	if err != nil {
		return err
	}
	key := datastore.NameKey(Kind, bmc.Hostname, nil)
	key.Namespace = Namespace
	creds := &Credentials{
		Hostname: bmc.Hostname,
		Username: Username,
		Password: password,
		Model:    Model,
		Address:  addrs[0],
	}
	if _, err := client.Put(ctx, key, creds); err != nil {
		return fmt.Errorf("datastore put %s in project %s: %w", bmc.Hostname, project, err)
	}
	return nil
}

// Name is the backend's name in logs and metrics: "datastore".
func (*Store) Name() string { return "datastore" }

// client returns the open client for project, opening it on first use.
func (s *Store) client(project string) (Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("datastore store is closed")
	}
	if c, ok := s.clients[project]; ok {
		return c, nil
	}
	if len(s.clients) >= maxProjects {
		return nil, fmt.Errorf("datastore: refusing a client for project %q: already %d projects open", project, maxProjects)
	}
	// The client outlives this request, so it must not inherit the request's
	// context: libraries keep the creation context for credential refreshes.
	// Opening does not block on the network (the connection is made lazily).
	c, err := s.NewClient(context.Background(), project)
	if err != nil {
		return nil, fmt.Errorf("datastore client for project %s: %w", project, err)
	}
	if s.clients == nil {
		s.clients = make(map[string]Client)
	}
	s.clients[project] = c
	return c, nil
}

// Close closes every client. Put fails after Close.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for p, c := range s.clients {
		if err := c.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing datastore client for %s: %w", p, err))
		}
	}
	s.clients = nil
	return errors.Join(errs...)
}
