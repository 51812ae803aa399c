package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
)

// bootstrapTokenType is the Secret type kubeadm gives join tokens.
const bootstrapTokenType = "bootstrap.kubernetes.io/token"

// Secret is the part of a bootstrap-token Secret the crossing check needs.
type Secret struct {
	// Name is the Secret's name, bootstrap-token-<id>.
	Name string
	// TokenID is data.token-id, the public half of the token.
	TokenID string
	// TokenSecret is data.token-secret; empty when the listing omits it.
	TokenSecret string
	// Description is data.description, as the server asked kubeadm to set it.
	Description string
	// Host is the host the description names, or the whole description
	// when it does not have the server's shape, so it matches no host.
	Host string
}

// hostFromDescription reads the host out of "Allow <host> to join the
// cluster", the description the server gives each token.
func hostFromDescription(d string) string {
	h, ok := strings.CutPrefix(d, "Allow ")
	if !ok {
		return d
	}
	h, ok = strings.CutSuffix(h, " to join the cluster")
	if !ok {
		return d
	}
	return h
}

// parseSecrets reads `kubectl get secrets -o json` and returns the
// bootstrap-token Secrets keyed by token id. Other Secrets are skipped, and
// so are tokens without a token-id, which the API server would not accept.
func parseSecrets(b []byte) (map[string]Secret, error) {
	var list struct {
		Items []struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Type string `json:"type"`
			// encoding/json decodes the base64 values into []byte.
			Data map[string][]byte `json:"data"`
		} `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("parsing secret list: %w", err)
	}
	out := map[string]Secret{}
	for _, it := range list.Items {
		if it.Type != bootstrapTokenType {
			continue
		}
		id := string(it.Data["token-id"])
		if id == "" {
			continue
		}
		desc := string(it.Data["description"])
		out[id] = Secret{
			Name:        it.Metadata.Name,
			TokenID:     id,
			TokenSecret: string(it.Data["token-secret"]),
			Description: desc,
			Host:        hostFromDescription(desc),
		}
	}
	return out, nil
}

// listSecrets runs kubectl once to list the kube-system Secrets as JSON.
func listSecrets(ctx context.Context, kubectl, kubeconfig string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, kubectl, "--kubeconfig", kubeconfig,
		"get", "secrets", "-n", "kube-system", "-o", "json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			return nil, fmt.Errorf("%s get secrets: %w: %s", kubectl, err, msg)
		}
		return nil, fmt.Errorf("%s get secrets: %w", kubectl, err)
	}
	return out, nil
}
