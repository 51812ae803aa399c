package kubectl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/overload"
	"github.com/m-lab/epoxy-extensions/token"
)

// slotTemplate prints, for one Secret or a List of them, what Slots needs
// of each: never the token secret itself, which so stays in the API server.
// Fields end with a unit separator, Secrets with a record separator, so
// that no description can break the format.
const slotTemplate = `{{define "s"}}{{.metadata.name}}{{"\x1f"}}{{.metadata.uid}}{{"\x1f"}}` +
	`{{.metadata.resourceVersion}}{{"\x1f"}}{{.metadata.creationTimestamp}}{{"\x1f"}}{{.type}}{{"\x1f"}}` +
	`{{with .data}}{{with index . "expiration"}}{{base64decode .}}{{end}}{{end}}{{"\x1f"}}` +
	`{{with .data}}{{with index . "description"}}{{base64decode .}}{{end}}{{end}}{{"\x1e"}}{{end}}` +
	`{{if eq .kind "List"}}{{range .items}}{{template "s" .}}{{end}}{{else}}{{template "s" .}}{{end}}`

// kubectl runs kubectl with args. A failure the API server answered with
// 429 or 503 wraps overload.Err, which the handler answers with 503 and
// Retry-After, as for the api backend.
func (k *Store) kubectl(ctx context.Context, args ...string) ([]byte, error) {
	return k.kubectlInput(ctx, nil, args...)
}

// kubectlInput is kubectl with stdin on kubectl's standard input (none
// when nil), for `--filename -`: what it carries, a token secret, reaches
// neither the command line nor a file.
func (k *Store) kubectlInput(ctx context.Context, stdin []byte, args ...string) ([]byte, error) {
	if k.Kubeconfig != "" {
		args = append([]string{"--kubeconfig", k.Kubeconfig}, args...)
	}
	path := filepath.Join(k.BinDir, "kubectl")
	var out []byte
	var err error
	if stdin != nil {
		out, err = command.RunInput(ctx, k.Runner, stdin, path, args...)
	} else {
		out, err = k.Runner.Run(ctx, path, args...)
	}
	if err != nil {
		return out, withOverload(err.Error(), err)
	}
	return out, nil
}

// withOverload returns err wrapping overload.Err when msg, what
// kubectl printed of it, says the API server answered 429 or 503: the one
// place that tells overload in kubectl's output.
func withOverload(msg string, err error) error {
	if strings.Contains(msg, "Error from server (TooManyRequests)") ||
		strings.Contains(msg, "Error from server (ServiceUnavailable)") {
		return fmt.Errorf("%w: %w", overload.Err, err)
	}
	return err
}

// Get returns the Secret of token id, with one kubectl run.
func (k *Store) Get(ctx context.Context, id string) (token.Slot, bool, error) {
	all, err := k.GetAll(ctx, []string{id})
	if err != nil {
		return token.Slot{}, false, err
	}
	s, ok := all[id]
	return s, ok, nil
}

// GetAll runs `kubectl get secret bootstrap-token-ID…` once for every id
// and returns the Secrets that exist.
func (k *Store) GetAll(ctx context.Context, ids []string) (map[string]token.Slot, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	args := []string{"get", "secret", "--namespace", metav1.NamespaceSystem, "--ignore-not-found",
		"--output", "go-template=" + slotTemplate, "--"}
	for _, id := range ids {
		args = append(args, bootstraputil.BootstrapTokenSecretName(id))
	}
	out, err := k.kubectl(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("kubectl get secret: %w", err)
	}
	slots, err := parseSlots(string(out))
	if err != nil {
		return nil, fmt.Errorf("kubectl get secret: %w", err)
	}
	return slots, nil
}

// parseSlots reads the output of slotTemplate.
func parseSlots(out string) (map[string]token.Slot, error) {
	slots := map[string]token.Slot{}
	for _, rec := range strings.Split(out, "\x1e") {
		if strings.TrimSpace(rec) == "" {
			continue
		}
		f := strings.Split(rec, "\x1f")
		if len(f) != 7 {
			return nil, fmt.Errorf("%w: a Secret with %d fields, want 7", ErrBadOutput, len(f))
		}
		id, ok := strings.CutPrefix(f[0], bootstrapapi.BootstrapTokenSecretPrefix)
		if !ok {
			return nil, fmt.Errorf("%w: Secret %q is no bootstrap token", ErrBadOutput, f[0])
		}
		created, err := time.Parse(time.RFC3339, f[3])
		if err != nil {
			return nil, fmt.Errorf("%w: creation time: %v", ErrBadOutput, err)
		}
		slot := token.Slot{ID: id, UID: f[1], ResourceVersion: f[2], Created: created}
		if f[4] == string(bootstrapapi.SecretTypeBootstrapToken) { // else nobody's
			slot.Description = f[6]
			if f[5] != "" {
				if slot.Expires, err = time.Parse(time.RFC3339, f[5]); err != nil {
					slot.Expires = time.Unix(0, 0) // unreadable: expired for the API server too
				}
			}
		}
		slots[id] = slot
	}
	return slots, nil
}

// Remove deletes the Secret of s with `kubectl delete --raw`, which, unlike
// `kubectl delete secret`, sends DeleteOptions: their preconditions make
// the delete fail if the Secret was replaced since it was read. They go on
// kubectl's stdin.
func (k *Store) Remove(ctx context.Context, s token.Slot) error {
	name := bootstraputil.BootstrapTokenSecretName(s.ID)
	opts := metav1.DeleteOptions{
		TypeMeta:      metav1.TypeMeta{APIVersion: "v1", Kind: "DeleteOptions"},
		Preconditions: &metav1.Preconditions{},
	}
	if s.UID != "" {
		uid := types.UID(s.UID)
		opts.Preconditions.UID = &uid
	}
	if s.ResourceVersion != "" {
		opts.Preconditions.ResourceVersion = &s.ResourceVersion
	}
	body, err := json.Marshal(opts)
	if err != nil {
		return fmt.Errorf("delete options: %w", err)
	}
	if _, err := k.kubectlInput(ctx, body, "delete", "--raw", secretsPath+"/"+name, "--filename", "-"); err != nil {
		if msg := err.Error(); strings.Contains(msg, "NotFound") || strings.Contains(msg, "Conflict") ||
			strings.Contains(msg, "not found") || strings.Contains(msg, "Precondition failed") {
			return fmt.Errorf("kubectl delete secret %s: %w", name, errors.Join(token.ErrSlotChanged, err))
		}
		return fmt.Errorf("kubectl delete secret %s: %w", name, err)
	}
	return nil
}
