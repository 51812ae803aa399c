package kubectl

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/m-lab/epoxy-extensions/command"
)

// Ready reports whether a token request would succeed: kubectl is
// executable, the API server answers, and the kubeconfig's user may create
// Secrets in kube-system, where bootstrap tokens live. It runs kubectl
// directly, outside the command slots of Runner, so that a boot storm
// filling them does not make the server look unready.
func (k *Store) Ready(ctx context.Context) error {
	if err := command.Executable(k.BinDir, "kubectl"); err != nil {
		return err
	}
	var args []string
	if k.Kubeconfig != "" {
		args = append(args, "--kubeconfig", k.Kubeconfig)
	}
	args = append(args, "auth", "can-i", "create", "secrets", "--namespace", metav1.NamespaceSystem)
	out, err := command.Exec{}.Run(ctx, filepath.Join(k.BinDir, "kubectl"), args...)
	if err != nil {
		return fmt.Errorf("kubectl auth can-i create secrets: %w", err)
	}
	if answer := strings.TrimSpace(string(out)); answer != "yes" {
		return fmt.Errorf("kubectl auth can-i create secrets: %q", answer)
	}
	return nil
}
