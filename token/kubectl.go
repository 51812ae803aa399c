package token

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// slotTemplate prints, one a line, what Slots needs of a token Secret: never
// the token secret itself, which so stays in the API server. The
// description comes last: it is the only free text.
const slotTemplate = `{{.metadata.uid}}
{{.metadata.resourceVersion}}
{{.metadata.creationTimestamp}}
{{.type}}
{{with .data}}{{with index . "expiration"}}{{base64decode .}}{{end}}{{end}}
{{with .data}}{{with index . "description"}}{{base64decode .}}{{end}}{{end}}`

func (k *Kubeadm) kubectl(ctx context.Context, args ...string) ([]byte, error) {
	if k.Kubeconfig != "" {
		args = append([]string{"--kubeconfig", k.Kubeconfig}, args...)
	}
	return k.Runner.Run(ctx, filepath.Join(k.BinDir, "kubectl"), args...)
}

// Get runs `kubectl get secret bootstrap-token-ID` and reads the slot from
// its output.
func (k *Kubeadm) Get(ctx context.Context, id string) (Slot, bool, error) {
	name := bootstraputil.BootstrapTokenSecretName(id)
	out, err := k.kubectl(ctx, "get", "secret", "--namespace", metav1.NamespaceSystem, "--ignore-not-found",
		"--output", "go-template="+slotTemplate, "--", name)
	if err != nil {
		return Slot{}, false, fmt.Errorf("kubectl get secret %s: %w", name, err)
	}
	if len(strings.TrimSpace(string(out))) == 0 {
		return Slot{}, false, nil
	}
	slot, err := parseSlot(id, string(out))
	if err != nil {
		return Slot{}, false, fmt.Errorf("kubectl get secret %s: %w", name, err)
	}
	return slot, true, nil
}

// parseSlot reads the output of slotTemplate for the Secret of token id.
func parseSlot(id, out string) (Slot, error) {
	f := strings.SplitN(out, "\n", 6)
	if len(f) != 6 || f[0] == "" {
		return Slot{}, fmt.Errorf("%w: %d lines of Secret fields, want 6", ErrBadOutput, len(f))
	}
	created, err := time.Parse(time.RFC3339, f[2])
	if err != nil {
		return Slot{}, fmt.Errorf("%w: creation time: %v", ErrBadOutput, err)
	}
	slot := Slot{ID: id, UID: f[0], ResourceVersion: f[1], Created: created}
	if f[3] != string(bootstrapapi.SecretTypeBootstrapToken) {
		return slot, nil // no bootstrap token: nobody's
	}
	slot.Description = f[5]
	if f[4] != "" {
		if slot.Expires, err = time.Parse(time.RFC3339, f[4]); err != nil {
			slot.Expires = time.Unix(0, 0) // unreadable: expired for the API server too
		}
	}
	return slot, nil
}

// Remove deletes the Secret of s with `kubectl delete --raw`, which, unlike
// `kubectl delete secret`, sends DeleteOptions: their preconditions make
// the delete fail if the Secret was replaced since it was read.
func (k *Kubeadm) Remove(ctx context.Context, s Slot) error {
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
	f, err := os.CreateTemp("", "epoxy-extensions-delete-*.json")
	if err != nil {
		return fmt.Errorf("delete options: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("delete options: %w", err)
	}
	path := "/api/v1/namespaces/" + metav1.NamespaceSystem + "/secrets/" + name
	if _, err := k.kubectl(ctx, "delete", "--raw", path, "--filename", f.Name()); err != nil {
		if msg := err.Error(); strings.Contains(msg, "NotFound") || strings.Contains(msg, "Conflict") ||
			strings.Contains(msg, "not found") || strings.Contains(msg, "Precondition failed") {
			return fmt.Errorf("kubectl delete secret %s: %w", name, errors.Join(ErrSlotChanged, err))
		}
		return fmt.Errorf("kubectl delete secret %s: %w", name, err)
	}
	return nil
}
