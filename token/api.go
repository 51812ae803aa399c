package token

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
	"k8s.io/cluster-bootstrap/util/tokens"

	"github.com/m-lab/epoxy-extensions/kube"
)

// NodeGroup is the extra group `kubeadm token create` gives its tokens
// (kubeadm's NodeBootstrapTokenAuthGroup): the group kubeadm's RBAC lets
// join the cluster.
const NodeGroup = "system:bootstrappers:kubeadm:default-node-token"

// SecretCreator creates a Secret: client-go's SecretInterface for
// kube-system has this method.
type SecretCreator interface {
	Create(ctx context.Context, secret *corev1.Secret, opts metav1.CreateOptions) (*corev1.Secret, error)
}

// API creates tokens through the Kubernetes API, writing the very Secret
// `kubeadm token create` writes, in about a millisecond instead of a
// process start.
type API struct {
	// Secrets creates Secrets in kube-system.
	Secrets SecretCreator
	// Cluster is the API address and CA hash returned with every token.
	Cluster kube.Cluster
	// TTL is the lifetime of each token.
	TTL time.Duration
	// Timeout bounds one Create, retries included.
	Timeout time.Duration

	now      func() time.Time       // time.Now when nil
	generate func() (string, error) // bootstraputil.GenerateBootstrapToken when nil
}

// ErrTokenCollision means every fresh token id was already taken: vanishingly
// unlikely with random ids, so a sign that token generation is broken.
var ErrTokenCollision = errors.New("bootstrap token id already in use")

// maxIDAttempts is how many fresh ids Create tries before giving up.
const maxIDAttempts = 3

// Create makes a new token for host (empty for a machine that sent no
// name) and returns its join details. Unlike kubeadm, which creates or
// updates, it only ever creates: an id that already exists belongs to
// another machine's token, so Create draws a new one rather than overwrite
// it. A create whose answer was lost may leave an unused Secret behind; it
// expires with TTL.
func (a *API) Create(ctx context.Context, host string) (Join, error) {
	if a.TTL <= 0 {
		// A Secret without expiration would be a join credential for ever.
		return Join{}, fmt.Errorf("token TTL %v is not positive", a.TTL)
	}
	if a.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.Timeout)
		defer cancel()
	}
	generate, now := a.generate, a.now
	if generate == nil {
		generate = bootstraputil.GenerateBootstrapToken
	}
	if now == nil {
		now = time.Now
	}
	for range maxIDAttempts {
		token, err := generate()
		if err != nil {
			return Join{}, fmt.Errorf("generating a bootstrap token: %w", err)
		}
		id, secret, err := tokens.ParseToken(token)
		if err != nil {
			// ParseToken's error quotes the token: never pass it on.
			return Join{}, errors.New("generated bootstrap token is not of the form id.secret")
		}
		s := BootstrapSecret(id, secret, Description(host), now().Add(a.TTL))
		err = kube.Call(ctx, "create_secret", func(ctx context.Context) error {
			_, err := a.Secrets.Create(ctx, s, metav1.CreateOptions{})
			return err
		})
		if apierrors.IsAlreadyExists(err) {
			continue
		}
		if err != nil {
			return Join{}, fmt.Errorf("creating Secret %s/%s: %w", s.Namespace, s.Name, err)
		}
		return Join{APIAddress: a.Cluster.APIAddress, Token: token, CAHash: a.Cluster.CAHash}, nil
	}
	return Join{}, ErrTokenCollision
}

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

// Name is the backend's name in logs and metrics: "kube_api".
func (*API) Name() string { return "kube_api" }
