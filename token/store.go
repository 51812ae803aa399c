package token

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Slot is what is known of the Secret in one slot.
type Slot struct {
	// ID is the token id; the Secret is bootstrap-token-<ID>.
	ID string
	// UID and ResourceVersion identify this very Secret, so that a delete
	// can be made conditional on nobody having replaced it.
	UID, ResourceVersion string
	// Description is the token's description, which names its host.
	Description string
	// Created is the Secret's creation time; Expires its expiration (zero
	// when it has none: such a Secret never expires).
	Created, Expires time.Time
}

// Store keeps bootstrap tokens in the cluster. API and kubectl.Store implement it.
type Store interface {
	// Put creates the token tok (id.secret) with description, expiring at
	// expires, and returns the join details. It returns an error wrapping
	// ErrSlotTaken when a Secret for that id exists, and leaves no token
	// behind when it fails.
	Put(ctx context.Context, tok, description string, expires time.Time) (Join, error)
	// Get returns the Secret of token id; found is false when there is none.
	Get(ctx context.Context, id string) (s Slot, found bool, err error)
	// Remove deletes the Secret of s if it is still that very object (same
	// UID and resource version); otherwise, or when it is gone, it returns
	// an error wrapping ErrSlotChanged.
	Remove(ctx context.Context, s Slot) error
	// Name names the store in logs and metrics: the program it runs
	// ("kubectl") or "kube_api".
	Name() string
}

// Lister is a Store that reads several slots in one call, cheaper than one
// Get each when every call is a process (kubectl.Store). When a create finds a
// host's slot taken, Slots reads the rest of its slots at once and tries to
// create only in those that may be free.
type Lister interface {
	// GetAll returns the Secrets of those ids that exist, by id.
	GetAll(ctx context.Context, ids []string) (map[string]Slot, error)
}

// FreeReader is a Lister that can tell whether its reads cost the API
// server nothing (API with its watch-fed cache). Slots then reads all of a
// host's slots before it creates, so that a token costs one create and a
// host at its limit costs no request at all; the create's AlreadyExists
// stays the only truth. Without it (kubectl.Store, where a read is a process),
// Slots creates in slot 0 first and reads only when that slot is taken.
type FreeReader interface {
	Lister
	// ReadsAreFree reports whether GetAll costs no request.
	ReadsAreFree() bool
}

// Admitter is a Store that admits a request before its first call, e.g.
// by holding one command slot for all of its calls (kubectl.Store). Slots admits
// every Create and Revoke once.
type Admitter interface {
	// Admit returns the context the request's calls use and a release to
	// call when it is done, or an error when the request cannot be taken
	// on in time.
	Admit(ctx context.Context) (_ context.Context, release func(), _ error)
}

// admit admits a request with the Store when it is an Admitter.
func (s *Slots) admit(ctx context.Context) (context.Context, func(), error) {
	if a, ok := s.Store.(Admitter); ok {
		return a.Admit(ctx)
	}
	return ctx, func() {}, nil
}

var (
	// ErrSlotTaken means a Secret for the token id exists already.
	ErrSlotTaken = errors.New("bootstrap token id already in use")
	// ErrSlotChanged means a Secret was deleted or replaced by someone else
	// between reading it and deleting it.
	ErrSlotChanged = errors.New("bootstrap token Secret changed meanwhile")
	// ErrLimit means the host holds as many live tokens as it may.
	ErrLimit = errors.New("host holds its most live join tokens")
)

// LimitError is ErrLimit with when the host's oldest live token expires,
// which is when it may ask again.
type LimitError struct {
	Host    string
	Max     int
	RetryAt time.Time
}

// Error says how many tokens the host holds and when the oldest expires.
func (e *LimitError) Error() string {
	return fmt.Sprintf("%v: %d live, the oldest expires at %s", ErrLimit, e.Max, e.RetryAt.UTC().Format(time.RFC3339))
}

// Unwrap makes errors.Is(err, ErrLimit) true.
func (e *LimitError) Unwrap() error { return ErrLimit }

// RetryTime returns RetryAt: a caller that only needs to know when the host
// may ask again checks for this method rather than importing token.
func (e *LimitError) RetryTime() time.Time { return e.RetryAt }
