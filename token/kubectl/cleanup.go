package kubectl

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/m-lab/epoxy-extensions/token"
)

// execCleanupTimeout bounds the undoing of creates that may have been
// stored though kubectl failed, before their requests are answered; for
// cleanupPoll of it, Secrets not found are looked for again every
// cleanupInterval, in case the API server was still storing them when
// kubectl was killed. lateCheckTimeout bounds each later look (lateChecks),
// which nobody waits for, slot wait included.
const (
	execCleanupTimeout = 3 * time.Second
	cleanupPoll        = time.Second
	cleanupInterval    = 250 * time.Millisecond
	lateCheckTimeout   = 15 * time.Second
)

// lateChecks are the times after a cleanup that left Secrets undecided
// (not found, or the API server or kubectl failed, or too slow) at which
// they are looked for again, from the background. An API server that
// received the create just before kubectl was killed may store it a little
// later; a cleanup cut short on a loaded machine is finished. Nil in tests
// that need no background work.
var lateChecks = []time.Duration{5 * time.Second, 20 * time.Second, 60 * time.Second}

// undoTemplate prints, for one Secret or a List of them, what undo needs:
// name, UID, resourceVersion and the token secret (base64), which undo
// compares in memory and never logs. Separators as in slotTemplate.
const undoTemplate = `{{define "s"}}{{.metadata.name}}{{"\x1f"}}{{.metadata.uid}}{{"\x1f"}}` +
	`{{.metadata.resourceVersion}}{{"\x1f"}}{{with .data}}{{with index . "token-secret"}}{{.}}{{end}}{{end}}{{"\x1e"}}{{end}}` +
	`{{if eq .kind "List"}}{{range .items}}{{template "s" .}}{{end}}{{else}}{{template "s" .}}{{end}}`

// cleanup deletes, of the Secrets of secrets (token id to token secret),
// those that hold their secret: creates that failed as far as kubectl
// tells may have been stored all the same. It reads them all with one
// kubectl run, again for cleanupPoll while some are not found, and deletes
// each still that Secret, all within execCleanupTimeout of a context that
// keeps ctx's values (its command slot) but not its end. Those left
// undecided are looked for again at lateChecks, with one run for all, each
// time taking a command slot of its own. A Secret still left behind (the
// API server unreachable even for this) holds one of its host's slots
// until it expires.
func (k *Store) cleanup(ctx context.Context, secrets map[string]string) {
	left := k.undo(context.WithoutCancel(ctx), secrets, cleanupPoll, execCleanupTimeout)
	checks := lateChecks
	if len(left) == 0 || len(checks) == 0 {
		return
	}
	go func() {
		for _, d := range checks {
			time.Sleep(d)
			if left = k.undo(context.Background(), left, 0, lateCheckTimeout); len(left) == 0 {
				return
			}
		}
	}()
}

// undo reads the Secrets of secrets, again every cleanupInterval for poll
// while some are not found (not after a failed read: the late checks try
// again), and deletes those that hold their secret, all within timeout.
// It returns those still undecided: not found, or neither read nor
// deleted.
func (k *Store) undo(ctx context.Context, secrets map[string]string, poll, timeout time.Duration) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	left := maps.Clone(secrets)
	giveUp := time.Now().Add(poll)
	for {
		found, err := k.readSecrets(ctx, slices.Sorted(maps.Keys(left)))
		if err != nil {
			return left // the late checks try again
		}
		for id, s := range found {
			want, ok := left[id]
			if !ok {
				continue
			}
			if subtle.ConstantTimeCompare([]byte(s.secret), []byte(want)) == 1 {
				if err := k.Remove(ctx, s.slot); err != nil && !errors.Is(err, token.ErrSlotChanged) {
					continue // try again later
				}
			}
			delete(left, id) // deleted, gone, or another token's: not ours to delete
		}
		if len(left) == 0 || !time.Now().Before(giveUp) {
			return left
		}
		select {
		case <-ctx.Done():
			return left
		case <-time.After(cleanupInterval):
		}
	}
}

// undoSecret is one Secret as undoTemplate prints it.
type undoSecret struct {
	slot   token.Slot
	secret string
}

// readSecrets reads the Secrets of ids that exist, token secrets included,
// with one kubectl run.
func (k *Store) readSecrets(ctx context.Context, ids []string) (map[string]undoSecret, error) {
	args := []string{"get", "secret", "--namespace", metav1.NamespaceSystem, "--ignore-not-found",
		"--output", "go-template=" + undoTemplate, "--"}
	for _, id := range ids {
		args = append(args, bootstraputil.BootstrapTokenSecretName(id))
	}
	out, err := k.kubectl(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("kubectl get secret: %w", err)
	}
	found := map[string]undoSecret{}
	for _, rec := range strings.Split(string(out), "\x1e") {
		if strings.TrimSpace(rec) == "" {
			continue
		}
		f := strings.Split(rec, "\x1f")
		id, ok := strings.CutPrefix(f[0], bootstrapapi.BootstrapTokenSecretPrefix)
		if len(f) != 4 || !ok {
			return nil, fmt.Errorf("kubectl get secret: %w: a record of %d fields", ErrBadOutput, len(f))
		}
		secret, err := base64.StdEncoding.DecodeString(f[3])
		if err != nil {
			secret = nil // unreadable: not ours
		}
		found[id] = undoSecret{slot: token.Slot{ID: id, UID: f[1], ResourceVersion: f[2]}, secret: string(secret)}
	}
	return found, nil
}
