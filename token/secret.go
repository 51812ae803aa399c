package token

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

// NodeGroup is the extra group `kubeadm token create` gives its tokens
// (kubeadm's NodeBootstrapTokenAuthGroup): the group kubeadm's RBAC lets
// join the cluster.
const NodeGroup = "system:bootstrappers:kubeadm:default-node-token"

// BootstrapSecret is the Secret `kubeadm token create --ttl TTL
// --description DESC` stores for token id.secret (kubeadm's
// BootstrapTokenToSecret with its default usages and groups): type
// bootstrap.kubernetes.io/token in kube-system, named bootstrap-token-<id>,
// expiring at expires (in UTC, RFC 3339, to the second).
func BootstrapSecret(id, secret, description string, expires time.Time) *corev1.Secret {
	data := map[string][]byte{
		bootstrapapi.BootstrapTokenIDKey:          []byte(id),
		bootstrapapi.BootstrapTokenSecretKey:      []byte(secret),
		bootstrapapi.BootstrapTokenExpirationKey:  []byte(expires.UTC().Format(time.RFC3339)),
		bootstrapapi.BootstrapTokenExtraGroupsKey: []byte(NodeGroup),
	}
	if description != "" {
		data[bootstrapapi.BootstrapTokenDescriptionKey] = []byte(description)
	}
	for _, usage := range bootstrapapi.KnownTokenUsages { // kubeadm's default: signing, authentication
		data[bootstrapapi.BootstrapTokenUsagePrefix+usage] = []byte("true")
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      bootstraputil.BootstrapTokenSecretName(id),
			Namespace: metav1.NamespaceSystem,
		},
		Type: bootstrapapi.SecretTypeBootstrapToken,
		Data: data,
	}
}
