package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/rest"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/handler"
	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/node"
	"github.com/m-lab/epoxy-extensions/token"
)

var (
	kubeBackend  = flag.String("kube-backend", "exec", "How to reach Kubernetes: exec runs kubeadm and kubectl from -bin-dir; api calls the API server in-process, with -kubeconfig or, when that is empty, the pod's service account.")
	kubeAPIQPS   = flag.Float64("kube-api-qps", 100, "With -kube-backend=api, the most API requests per second the server sends, on average.")
	kubeAPIBurst = flag.Int("kube-api-burst", 200, "With -kube-backend=api, the most API requests the server sends in a burst above -kube-api-qps.")
)

// maxAPIRequest bounds one HTTP request to the API server; -command-timeout
// bounds a whole API call, retries included.
const maxAPIRequest = 10 * time.Second

// clusterInfoTimeout bounds reading kube-public/cluster-info at start, and
// startupCheckTimeout the version check.
const (
	clusterInfoTimeout  = 30 * time.Second
	startupCheckTimeout = 5 * time.Second
)

// A readiness check of the exec backend runs kubectl at most once per
// readyMaxAge, for at most readyTimeout.
const (
	readyMaxAge  = 10 * time.Second
	readyTimeout = 5 * time.Second
)

// execReady reports whether a token request would succeed with the exec
// backend: kubeadm and kubectl are executable, the API server answers, and
// the kubeconfig's user may create Secrets in kube-system, where kubeadm
// stores tokens. It runs outside the command slots, so that a boot storm
// filling them does not make the server look unready.
func execReady(ctx context.Context) error {
	if err := command.Executable(*binDir, "kubeadm", "kubectl"); err != nil {
		return err
	}
	var args []string
	if *kubeconfig != "" {
		args = append(args, "--kubeconfig", *kubeconfig)
	}
	args = append(args, "auth", "can-i", "create", "secrets", "--namespace", metav1.NamespaceSystem)
	out, err := command.Exec{}.Run(ctx, filepath.Join(*binDir, "kubectl"), args...)
	if err != nil {
		return fmt.Errorf("kubectl auth can-i create secrets: %w", err)
	}
	if answer := strings.TrimSpace(string(out)); answer != "yes" {
		return fmt.Errorf("kubectl auth can-i create secrets: %q", answer)
	}
	return nil
}

// kubeBackends returns the token issuer, the node deleter and the readiness
// check of the backend -kube-backend names.
func kubeBackends(log *slog.Logger) (handler.TokenIssuer, handler.NodeDeleter, func() error, error) {
	switch *kubeBackend {
	case "exec":
		if *maxCommands < 1 {
			*maxCommands = 1
		}
		runner := command.NewLimited(command.Exec{Timeout: *commandTimeout}, *maxCommands)
		ready := &handler.CachedCheck{Check: execReady, MaxAge: readyMaxAge, Timeout: readyTimeout}
		log.Info("kube backend: exec", "bin_dir", *binDir, "max_concurrent_commands", *maxCommands)
		return &token.Kubeadm{Runner: runner, BinDir: *binDir, Kubeconfig: *kubeconfig, TTL: *tokenTTL},
			&node.Kubectl{Runner: runner, BinDir: *binDir, Kubeconfig: *kubeconfig}, ready.Err, nil
	case "api":
		return apiBackends(log)
	}
	return nil, nil, nil, fmt.Errorf("-kube-backend %q: want exec or api", *kubeBackend)
}

// apiBackends builds the one API client of the process and learns the
// cluster's join details: from -kubeconfig as kubeadm would, or in a pod
// from the cluster-info ConfigMap joining machines discover the cluster by.
func apiBackends(log *slog.Logger) (handler.TokenIssuer, handler.NodeDeleter, func() error, error) {
	if *kubeAPIQPS <= 0 || *kubeAPIBurst < 1 {
		return nil, nil, nil, fmt.Errorf("-kube-api-qps and -kube-api-burst must be positive")
	}
	client, cfg, err := kube.NewClient(kube.Options{
		Kubeconfig:     *kubeconfig,
		RequestTimeout: min(*commandTimeout, maxAPIRequest),
		QPS:            float32(*kubeAPIQPS),
		Burst:          *kubeAPIBurst,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	var cluster kube.Cluster
	source := *kubeconfig
	if *kubeconfig != "" {
		cluster, err = kube.ClusterFromKubeconfig(*kubeconfig)
	} else {
		source = kube.ClusterInfoNamespace + "/cluster-info"
		ctx, cancel := context.WithTimeout(context.Background(), clusterInfoTimeout)
		defer cancel()
		cluster, err = kube.ClusterFromClusterInfo(ctx, client.ConfigMaps(kube.ClusterInfoNamespace))
	}
	if err != nil {
		return nil, nil, nil, err
	}
	log.Info("kube backend: api", "api_server", cfg.Host, "join_source", source,
		"join_api_address", cluster.APIAddress, "join_ca_hash", cluster.CAHash)
	checkAPIServer(client.RESTClient(), log)
	tokens := &token.API{Secrets: client.Secrets(metav1.NamespaceSystem), Cluster: cluster, TTL: *tokenTTL, Timeout: *commandTimeout}
	nodes := &node.API{Nodes: client.Nodes(), Timeout: *commandTimeout}
	return tokens, nodes, nil, nil
}

// checkAPIServer asks the API server for its version once at start: the log
// then says at once whether the server is reachable and trusted, and the
// first machine to boot does not pay for the TLS handshake. A failure is
// only logged: requests retry on their own, and the API server may be
// starting too.
func checkAPIServer(client rest.Interface, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), startupCheckTimeout)
	defer cancel()
	var info version.Info
	err := kube.Call(ctx, "get_version", func(ctx context.Context) error {
		body, err := client.Get().AbsPath("/version").SetHeader("Accept", "application/json").Do(ctx).Raw()
		if err != nil {
			return err
		}
		return json.Unmarshal(body, &info)
	})
	if err != nil {
		log.Warn("API server not reachable at start; requests will retry", "error", err)
		return
	}
	log.Info("API server reachable", "version", info.GitVersion)
}
