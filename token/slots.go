package token

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// Slots caps the live join tokens of each host with the cluster itself as
// the only record: host h owns Max slots, slot i being the bootstrap token id
// SlotID(h, i), and a token is created only into a free slot. The API
// server refuses to create a Secret whose name exists, atomically, so any
// number of replicas, restarted any number of times, can never hand out
// more than Max live tokens for one host between them. Only the 16
// characters of the token secret are random.
//
// Why the id gives nothing away: it is a hash of the hostname and slot
// number, so anyone can compute it, but it is the public half of a token
// (kubeadm prints it, the Secret is named after it, the token's Secret
// already names its host in its description). Joining takes the secret half,
// which comes from crypto/rand.
//
// Why two hosts never compete: ids have 36^6 (about 2.2e9) values, so two
// hosts' slots can collide, however rarely (about 1 in 2e9 per pair of
// slots). A slot holds a host's token only when the Secret's description
// names that host; a Secret in it that names another host, or none, is
// another's and is never counted, replaced or deleted: the host just has one
// slot fewer until that Secret is gone.
type Slots struct {
	// Store keeps the tokens in the cluster.
	Store Store
	// Max is the most live tokens one named host may hold; 0 means no limit
	// (random ids, as kubeadm draws them).
	Max int
	// MaxUnnamed is the most live tokens requests without a hostname
	// (control-plane VMs joining) may hold between them; 0 means no limit.
	MaxUnnamed int
	// TTL is the lifetime of each token.
	TTL time.Duration

	// Now is the clock; nil means time.Now. Generate draws a random token
	// (id.secret); nil means bootstraputil.GenerateBootstrapToken. Tests
	// set them.
	Now      func() time.Time
	Generate func() (string, error)
}

// maxSlotAttempts bounds how often Create tries one slot when other
// replicas keep changing it under its feet.
const maxSlotAttempts = 3

// idAlphabet is the alphabet of bootstrap token ids.
const idAlphabet = "0123456789abcdefghijklmnopqrstuvwxyz"

// SlotID returns the token id of host's slot i: six characters of
// [a-z0-9] from SHA-256 of a fixed label, the host and i.
func SlotID(host string, i int) string {
	sum := sha256.Sum256([]byte("epoxy-extensions token slot v1\x00" + host + "\x00" + strconv.Itoa(i)))
	// 36^6 is about 2^31: the remainder of a 64-bit value is uniform to
	// within 2^-33.
	n := binary.BigEndian.Uint64(sum[:8]) % (36 * 36 * 36 * 36 * 36 * 36)
	var id [6]byte
	for k := len(id) - 1; k >= 0; k-- {
		id[k] = idAlphabet[n%36]
		n /= 36
	}
	return string(id[:])
}

// limit returns the most live tokens host may hold; 0 means no limit.
func (s *Slots) limit(host string) int {
	if host == "" {
		return s.MaxUnnamed
	}
	return s.Max
}

func (s *Slots) clock() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// newToken returns a fresh random token; with id set, it takes that id and
// keeps only the random secret.
func (s *Slots) newToken(id string) (string, error) {
	generate := s.Generate
	if generate == nil {
		generate = bootstraputil.GenerateBootstrapToken
	}
	tok, err := generate()
	if err != nil {
		return "", fmt.Errorf("generating a bootstrap token: %w", err)
	}
	randomID, secret, ok := strings.Cut(tok, ".")
	if !ok || len(randomID) != 6 || len(secret) != 16 {
		// Never quote tok: it is a credential.
		return "", errors.New("generated bootstrap token is not of the form id.secret")
	}
	if id == "" {
		id = randomID
	}
	return id + "." + secret, nil
}

// Create makes a new token for host (empty for a machine that sent no name)
// in the first free slot and returns its join details. With every slot
// holding a live token of host, it returns a *LimitError.
func (s *Slots) Create(ctx context.Context, host string) (Join, error) {
	if s.TTL <= 0 {
		// A Secret without expiration would be a join credential for ever.
		return Join{}, fmt.Errorf("token TTL %v is not positive", s.TTL)
	}
	description := Description(host)
	ctx, release, err := s.admit(ctx)
	if err != nil {
		return Join{}, err
	}
	defer release()
	n := s.limit(host)
	if n <= 0 {
		return s.createRandom(ctx, description)
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = SlotID(host, i)
	}
	// Slot 0 first, unread: a host that holds no live token, the usual
	// case in a boot storm, costs one create. Only when a create finds its
	// slot taken are the slots read, all the rest at once with a Lister.
	// Where reads are free (a cache), all slots are read first instead.
	var known map[string]Slot
	listed := false
	if f, ok := s.Store.(FreeReader); ok && f.ReadsAreFree() {
		if known, err = f.GetAll(ctx, ids); err != nil {
			return Join{}, err
		}
		listed = true
	}
	lookup := func(i int) func() (Slot, bool, error) {
		return func() (Slot, bool, error) {
			l, ok := s.Store.(Lister)
			if !ok || listed {
				return s.Store.Get(ctx, ids[i])
			}
			var err error
			if known, err = l.GetAll(ctx, ids[i:]); err != nil {
				return Slot{}, false, err
			}
			listed = true
			slot, found := known[ids[i]]
			return slot, found, nil
		}
	}
	var oldest time.Time
	for i, id := range ids {
		var join Join
		var live time.Time
		var err error
		slot, found := known[id]
		if found {
			live = s.held(slot, description, s.clock())
		}
		if live.IsZero() {
			var stale *Slot // the host's own expired token, to remove first
			if found && slot.Description == description {
				stale = &slot
			}
			join, live, err = s.take(ctx, id, description, stale, lookup(i))
		}
		if err != nil {
			return Join{}, fmt.Errorf("slot %d: %w", i, err)
		}
		if live.IsZero() {
			return join, nil
		}
		if oldest.IsZero() || live.Before(oldest) {
			oldest = live
		}
	}
	return Join{}, &LimitError{Host: host, Max: n, RetryAt: oldest}
}

// createRandom makes a token with a random id, as kubeadm does, for hosts
// without a limit.
func (s *Slots) createRandom(ctx context.Context, description string) (Join, error) {
	for range maxSlotAttempts {
		tok, err := s.newToken("")
		if err != nil {
			return Join{}, err
		}
		join, err := s.Store.Put(ctx, tok, description, s.clock().Add(s.TTL))
		if errors.Is(err, ErrSlotTaken) {
			continue // another token's id: draw again, never overwrite
		}
		return join, err
	}
	return Join{}, fmt.Errorf("%d random ids in a row: %w", maxSlotAttempts, ErrSlotTaken)
}

// take tries to create a token for description in slot id, first removing
// stale when it is set; get reads the slot when the create finds it taken.
// It returns the
// join details, or, when the slot is not free, a non-zero time after which
// it may be: the expiration of the host's live token in it, or for a slot
// another host holds (or that keeps changing), the end of a TTL from now.
//
// Every branch is safe against another replica doing the same at the same
// time: creation is atomic, and an expired token is deleted only if it is
// still the Secret that was read, so two replicas cannot both free one slot
// and then both fill it.
func (s *Slots) take(ctx context.Context, id, description string, stale *Slot, get func() (Slot, bool, error)) (Join, time.Time, error) {
	if stale != nil {
		// Known to hold this host's expired token: free it before creating,
		// unless it changed since it was read (then the create tells).
		if err := s.Store.Remove(ctx, *stale); err != nil && !errors.Is(err, ErrSlotChanged) {
			return Join{}, time.Time{}, err
		}
	}
	for range maxSlotAttempts {
		tok, err := s.newToken(id)
		if err != nil {
			return Join{}, time.Time{}, err
		}
		now := s.clock()
		join, err := s.Store.Put(ctx, tok, description, now.Add(s.TTL))
		if err == nil {
			return join, time.Time{}, nil
		}
		if !errors.Is(err, ErrSlotTaken) {
			return Join{}, time.Time{}, err
		}
		slot, found, err := get()
		if err != nil {
			return Join{}, time.Time{}, err
		}
		if !found {
			continue // deleted since: try to create again
		}
		if live := s.held(slot, description, now); !live.IsZero() {
			return Join{}, live, nil
		}
		// This host's token, expired but not yet removed by the token
		// cleaner: free the slot, unless someone else did first.
		if err := s.Store.Remove(ctx, slot); err != nil && !errors.Is(err, ErrSlotChanged) {
			return Join{}, time.Time{}, err
		}
	}
	// The slot changed under us every time: other replicas are busy with
	// this host. Count it as held for now.
	return Join{}, s.clock().Add(s.TTL), nil
}

// held returns when slot stops being held against a host with
// description, or zero when it may be freed: the expiry of the host's live
// token; for another host's Secret (or one that is no bootstrap token of
// ours), which is never touched and never counted, a TTL from now.
func (s *Slots) held(slot Slot, description string, now time.Time) time.Time {
	switch {
	case slot.Description != description:
		return now.Add(s.TTL)
	case slot.Expires.IsZero():
		return now.Add(s.TTL) // never expires: not ours to judge; never counted as free
	case slot.Expires.After(now):
		return slot.Expires
	}
	return time.Time{}
}

// Revoke deletes host's tokens that were created before notAfter (every
// one when notAfter is zero) and returns how many it deleted. Tokens of
// other hosts that share a slot id are left alone.
func (s *Slots) Revoke(ctx context.Context, host string, notAfter time.Time) (int, error) {
	n := s.limit(host)
	description := Description(host)
	ctx, release, err := s.admit(ctx)
	if err != nil {
		return 0, err
	}
	defer release()
	revoked := 0
	var errs []error
	var known map[string]Slot
	if l, ok := s.Store.(Lister); ok && n > 0 {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = SlotID(host, i)
		}
		if known, err = l.GetAll(ctx, ids); err != nil {
			return 0, err
		}
	}
	for i := range n {
		var slot Slot
		var found bool
		if known != nil {
			slot, found = known[SlotID(host, i)]
		} else if slot, found, err = s.Store.Get(ctx, SlotID(host, i)); err != nil {
			errs = append(errs, fmt.Errorf("slot %d: %w", i, err))
			continue
		}
		if !found || slot.Description != description || (!notAfter.IsZero() && !slot.Created.Before(notAfter)) {
			continue
		}
		err = s.Store.Remove(ctx, slot)
		switch {
		case err == nil:
			revoked++
		case errors.Is(err, ErrSlotChanged):
			// Gone already, or replaced by a newer token: not ours to revoke.
		default:
			errs = append(errs, fmt.Errorf("slot %d: %w", i, err))
		}
	}
	return revoked, errors.Join(errs...)
}

// Name is the backend's name in logs and metrics: its Store's ("kubectl"
// or "kube_api").
func (s *Slots) Name() string { return s.Store.Name() }
