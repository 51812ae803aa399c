// Package token creates Kubernetes bootstrap tokens and returns what a
// machine needs to join the cluster. Slots caps the live tokens of each host
// with the cluster as the only record, and revokes them; it keeps them in a
// Store: package token/kubectl creates, reads and deletes the
// bootstrap-token Secrets with kubectl (the exec backend), package
// token/kubeapi writes the same Secrets through the Kubernetes API
// in-process (the api backend).
package token

import (
	"fmt"

	"github.com/m-lab/epoxy-extensions/token/joincmd"
)

// Join is what a machine needs to join the cluster (joincmd.Join).
type Join = joincmd.Join

// Description is the token description stored for host, as M-Lab's server
// passes it to kubeadm.
func Description(host string) string {
	if host == "" {
		return "Allow an unnamed machine to join the cluster"
	}
	return fmt.Sprintf("Allow %s to join the cluster", host)
}
