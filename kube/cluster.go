package kube

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	certutil "k8s.io/client-go/util/cert"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"

	"github.com/m-lab/epoxy-extensions/hostname"
)

// Cluster is what a joining machine needs besides its token: where the API
// server is and which CA to trust, as `kubeadm token create
// --print-join-command` prints them.
type Cluster struct {
	// APIAddress is the API server's host:port.
	APIAddress string
	// CAHash is "sha256:" and the hex SHA-256 of the cluster CA's
	// SubjectPublicKeyInfo (kubeadm's --discovery-token-ca-cert-hash).
	CAHash string
}

// ErrCluster means a kubeconfig does not say where the API server is or
// which CA it uses.
var ErrCluster = errors.New("no usable cluster in kubeconfig")

// ClusterFromKubeconfig reads the cluster from the kubeconfig file at path
// as kubeadm does for --print-join-command: the unnamed cluster if there is
// one, else the current context's; the server URL without "https://"; the
// hash of the first CA certificate, from inline data or the file the
// kubeconfig names. Unlike kubeadm, which reads a relative CA path from its
// working directory, it reads it from the kubeconfig's folder, as the API
// client does: the hash is always of the CA the server itself trusts.
func ClusterFromKubeconfig(path string) (Cluster, error) {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return Cluster{}, fmt.Errorf("loading kubeconfig %s: %w", path, err)
	}
	// A relative certificate-authority is relative to the kubeconfig's
	// folder, as the API client built from the same file (Config) reads it;
	// LoadFromFile alone would read it from the working directory.
	if err := clientcmd.ResolveLocalPaths(cfg); err != nil {
		return Cluster{}, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	c, err := clusterFromConfig(cfg)
	if err != nil {
		return Cluster{}, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return c, nil
}

// ConfigMapGetter reads a ConfigMap, as client-go's ConfigMapInterface does.
type ConfigMapGetter interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.ConfigMap, error)
}

// ClusterInfoNamespace holds the cluster-info ConfigMap.
const ClusterInfoNamespace = metav1.NamespacePublic

// ClusterFromClusterInfo reads the cluster from the kube-public/cluster-info
// ConfigMap that kubeadm publishes: the kubeconfig joining machines discover
// the API server and its CA from, written from the control plane's admin
// kubeconfig. In a pod it stands in for that file. cms must be the
// ConfigMaps of kube-public.
func ClusterFromClusterInfo(ctx context.Context, cms ConfigMapGetter) (Cluster, error) {
	var cm *corev1.ConfigMap
	err := Call(ctx, "get_cluster_info", func(ctx context.Context) error {
		var err error
		cm, err = cms.Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
		return err
	})
	if err != nil {
		return Cluster{}, fmt.Errorf("reading %s/%s: %w", ClusterInfoNamespace, bootstrapapi.ConfigMapClusterInfo, err)
	}
	data, ok := cm.Data[bootstrapapi.KubeConfigKey]
	if !ok {
		return Cluster{}, fmt.Errorf("%s/%s has no %q key: %w", ClusterInfoNamespace, bootstrapapi.ConfigMapClusterInfo, bootstrapapi.KubeConfigKey, ErrCluster)
	}
	cfg, err := clientcmd.Load([]byte(data))
	if err != nil {
		return Cluster{}, fmt.Errorf("%s/%s: %w", ClusterInfoNamespace, bootstrapapi.ConfigMapClusterInfo, err)
	}
	c, err := clusterFromConfig(cfg)
	if err != nil {
		return Cluster{}, fmt.Errorf("%s/%s: %w", ClusterInfoNamespace, bootstrapapi.ConfigMapClusterInfo, err)
	}
	return c, nil
}

// clusterFromConfig follows kubeadm's GetClusterFromKubeConfig and
// getJoinCommand (cmd/kubeadm/app/util/kubeconfig, cmd/kubeadm/app/cmd/util).
func clusterFromConfig(cfg *clientcmdapi.Config) (Cluster, error) {
	cluster := cfg.Clusters[""]
	if cluster == nil {
		ctx := cfg.Contexts[cfg.CurrentContext]
		if ctx == nil {
			return Cluster{}, fmt.Errorf("%w: current context %q does not exist", ErrCluster, cfg.CurrentContext)
		}
		if cluster = cfg.Clusters[ctx.Cluster]; cluster == nil {
			return Cluster{}, fmt.Errorf("%w: context %q names cluster %q, which does not exist", ErrCluster, cfg.CurrentContext, ctx.Cluster)
		}
	}
	var certs []*x509.Certificate
	var err error
	switch {
	case len(cluster.CertificateAuthorityData) > 0:
		certs, err = certutil.ParseCertsPEM(cluster.CertificateAuthorityData)
	case cluster.CertificateAuthority != "":
		certs, err = certutil.CertsFromFile(cluster.CertificateAuthority)
	default:
		return Cluster{}, fmt.Errorf("%w: no CA certificate", ErrCluster)
	}
	if err != nil {
		return Cluster{}, fmt.Errorf("%w: CA certificate: %v", ErrCluster, err)
	}
	addr := strings.ReplaceAll(cluster.Server, "https://", "")
	if !hostname.ValidAddress(addr) {
		return Cluster{}, fmt.Errorf("%w: server %q is not https://host:port", ErrCluster, cluster.Server)
	}
	return Cluster{APIAddress: addr, CAHash: CAHash(certs[0])}, nil
}

// CAHash returns the public key pin kubeadm join verifies a CA with:
// "sha256:" and the hex SHA-256 of its SubjectPublicKeyInfo.
func CAHash(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ClusterValue holds the join details, which may change while the server
// runs (a CA rotation rewrites cluster-info). It is safe for concurrent use.
type ClusterValue struct{ v atomic.Pointer[Cluster] }

// NewClusterValue returns a ClusterValue holding c.
func NewClusterValue(c Cluster) *ClusterValue {
	v := &ClusterValue{}
	v.Store(c)
	return v
}

// Load returns the current join details.
func (v *ClusterValue) Load() Cluster { return *v.v.Load() }

// Store replaces the join details.
func (v *ClusterValue) Store(c Cluster) { v.v.Store(&c) }
