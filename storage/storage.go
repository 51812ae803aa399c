// Package storage keeps BMC (iDRAC) credentials in Google Cloud Datastore, in
// the schema the M-Lab reboot service reads.
package storage

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"cloud.google.com/go/datastore"
	"github.com/m-lab/go/host"
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

// BMC names the BMC of one M-Lab machine.
type BMC struct {
	// Hostname is the BMC's name: the machine's with mlabN replaced by mlabNd.
	Hostname string
	// Project is the Google Cloud project named in the hostname.
	Project string
}

// ErrResolve means the BMC's name did not resolve to an address.
var ErrResolve = errors.New("cannot resolve BMC")

// ErrNotMachine means a hostname is not that of an M-Lab physical machine,
// which is the only kind that has a BMC.
var ErrNotMachine = errors.New("not an M-Lab machine name")

// v1Machine finds the machine and site at the end of a v1 name, dashed
// (ndt-iupui-mlab1-lga01.measurement-lab.org) or dotted
// (mlab1.lga01.measurement-lab.org), as github.com/m-lab/go/host does.
var v1Machine = regexp.MustCompile(`(^|[-.])(mlab[1-4])([-.][a-z]{3}[0-9tc]{2}\.measurement-lab\.org)$`)

// ParseBMC derives the BMC of the machine named name, as M-Lab's original
// server did: the name with the machine mlabN replaced by mlabNd, in the
// project the name gives. It accepts the physical-machine names
// github.com/m-lab/go/host parses: v2 names, with or without a service
// prefix (mlab1-lga01.mlab-oti.measurement-lab.org →
// mlab1d-lga01.mlab-oti.measurement-lab.org in project mlab-oti), and v1
// names (mlab1.lga01.measurement-lab.org → mlab1d.lga01.measurement-lab.org),
// which name no project: Store needs one of its own for them. Unlike the
// original, it replaces the machine where the name format puts it, not its
// first occurrence, and refuses names that have no BMC: virtual machines
// (an instance-group suffix), v3 (autojoin) names, BMC names themselves and
// "third-party".
func ParseBMC(name string) (BMC, error) {
	p, err := host.Parse(name)
	if err != nil {
		return BMC{}, fmt.Errorf("%w: %w", ErrNotMachine, err)
	}
	if !machineRE.MatchString(p.Machine) || p.Suffix != "" {
		return BMC{}, fmt.Errorf("%w: %s has no BMC", ErrNotMachine, name)
	}
	switch p.Version {
	case "v2":
		// <machine>-<site> or <service>-<machine>-<site>, then the project.
		first, rest, _ := strings.Cut(name, ".")
		labels := strings.Split(first, "-")
		labels[len(labels)-2] += "d"
		return BMC{Hostname: strings.Join(labels, "-") + "." + rest, Project: p.Project}, nil
	case "v1":
		if !v1Machine.MatchString(name) {
			return BMC{}, fmt.Errorf("%w: %s", ErrNotMachine, name)
		}
		return BMC{Hostname: v1Machine.ReplaceAllString(name, "${1}${2}d${3}")}, nil
	}
	return BMC{}, fmt.Errorf("%w: %s has no BMC", ErrNotMachine, name)
}

var machineRE = regexp.MustCompile(`^mlab[1-4]$`)

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
// with ErrNotMachine before any lookup.
func (s *Store) Put(ctx context.Context, bmc BMC, password string) error {
	project := bmc.Project
	if s.Project != "" {
		project = s.Project
	}
	if project == "" {
		return fmt.Errorf("%w: %s names no Google Cloud project (set -datastore-project)", ErrNotMachine, bmc.Hostname)
	}
	addrs, err := s.Resolver.LookupHost(ctx, bmc.Hostname)
	if err != nil {
		return fmt.Errorf("%w %s: %w", ErrResolve, bmc.Hostname, err)
	}
	if len(addrs) == 0 {
		return fmt.Errorf("%w %s: no addresses", ErrResolve, bmc.Hostname)
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
