package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/handler"
	"github.com/m-lab/epoxy-extensions/kube"
	"github.com/m-lab/epoxy-extensions/node"
	"github.com/m-lab/epoxy-extensions/nodewatch"
	"github.com/m-lab/epoxy-extensions/token"
	"github.com/m-lab/epoxy-extensions/token/kubeapi"
	"github.com/m-lab/epoxy-extensions/token/kubectl"
)

// backendConfig is what the Kubernetes backends are built from: the flags,
// read once in main, so that building a backend changes no global.
type backendConfig struct {
	Backend        string
	BinDir         string
	Kubeconfig     string
	QPS            float64
	Burst          int
	MaxCommands    int
	CommandTimeout time.Duration
	TokenTTL       time.Duration
	// MaxTokens and MaxUnnamedTokens are the live token limits per named
	// host and for requests without a hostname; 0 means no limit.
	MaxTokens, MaxUnnamedTokens int
}

// backend is a built Kubernetes backend.
type backend struct {
	tokens *token.Slots
	nodes  handler.NodeDeleter
	// ready reports whether a token request would succeed; nil means always.
	ready func() error
	// run, when set, does the backend's background work (watching Nodes,
	// following cluster-info) until ctx ends.
	run func(ctx context.Context)
}

// maxAPIRequest bounds one HTTP request to the API server; -command-timeout
// bounds a whole API call, retries included.
const maxAPIRequest = 10 * time.Second

// clusterInfoTimeout bounds reading kube-public/cluster-info at start, and
// startupCheckTimeout the version check.
const (
	clusterInfoTimeout  = 30 * time.Second
	startupCheckTimeout = 5 * time.Second
)

// A readiness check runs at most once per readyMaxAge, for at most
// readyTimeout.
const (
	readyMaxAge  = 10 * time.Second
	readyTimeout = 5 * time.Second
)

// kubectlGOGC is the garbage collector setting of every kubectl the exec
// backend runs: measured on 2 cores, `kubectl version --client` took 74 ms
// of CPU by default and 56 ms with GOGC=400, at the same peak memory (47
// MiB): a short-lived process has little garbage worth collecting.
const kubectlGOGC = "GOGC=400"

// execBackend runs kubectl from cfg.BinDir for every API call, at most
// cfg.MaxCommands at once, one slot per request. It computes the join
// details from the kubeconfig, as `kubeadm token create
// --print-join-command` does, and re-reads them as the file changes.
func execBackend(cfg backendConfig, log *slog.Logger) (*backend, error) {
	if cfg.Kubeconfig == "" {
		return nil, fmt.Errorf("-kube-backend exec needs a kubeconfig: %w", kube.ErrNoConfig)
	}
	readCluster := func(context.Context) (kube.Cluster, error) { return kube.ClusterFromKubeconfig(cfg.Kubeconfig) }
	cluster, err := readCluster(context.Background())
	if err != nil {
		return nil, err
	}
	joinDetails := kube.NewClusterValue(cluster)
	runner := command.NewLimited(command.Exec{Timeout: cfg.CommandTimeout, Env: []string{kubectlGOGC}}, max(cfg.MaxCommands, 1))
	log.Info("kube backend: exec", "bin_dir", cfg.BinDir, "max_concurrent_commands", max(cfg.MaxCommands, 1),
		"join_source", cfg.Kubeconfig, "join_api_address", cluster.APIAddress, "join_ca_hash", cluster.CAHash)
	store := &kubectl.Store{Runner: runner, BinDir: cfg.BinDir, Kubeconfig: cfg.Kubeconfig, Cluster: joinDetails, Timeout: cfg.CommandTimeout}
	ready := &cachedCheck{Check: store.Ready, MaxAge: readyMaxAge, Timeout: readyTimeout}
	return &backend{
		tokens: &token.Slots{Store: store, Max: cfg.MaxTokens, MaxUnnamed: cfg.MaxUnnamedTokens, TTL: cfg.TokenTTL},
		nodes:  &node.Kubectl{Runner: runner, BinDir: cfg.BinDir, Kubeconfig: cfg.Kubeconfig},
		ready:  ready.Err,
		run: func(ctx context.Context) {
			kube.FollowCluster(ctx, readCluster, joinDetails.Load, joinDetails.Store, readyMaxAge, log)
		},
	}, nil
}

// newKubeBackend builds the backend cfg.Backend names.
func newKubeBackend(cfg backendConfig, log *slog.Logger) (*backend, error) {
	if cfg.TokenTTL <= 0 {
		return nil, fmt.Errorf("token TTL %v is not positive", cfg.TokenTTL)
	}
	switch cfg.Backend {
	case "exec":
		return execBackend(cfg, log)
	case "api":
		return apiBackend(cfg, log)
	}
	return nil, fmt.Errorf("-kube-backend %q: want exec or api", cfg.Backend)
}

// apiBackend builds the one API client of the process and learns the
// cluster's join details: from the kubeconfig as kubeadm would, or in a pod
// from the cluster-info ConfigMap joining machines discover the cluster by,
// which it then follows.
func apiBackend(cfg backendConfig, log *slog.Logger) (*backend, error) {
	if cfg.QPS <= 0 || cfg.Burst < 1 {
		return nil, fmt.Errorf("-kube-api-qps and -kube-api-burst must be positive")
	}
	client, rc, err := kube.NewClient(kube.Options{
		Kubeconfig:     cfg.Kubeconfig,
		RequestTimeout: min(cfg.CommandTimeout, maxAPIRequest),
		QPS:            float32(cfg.QPS),
		Burst:          cfg.Burst,
	})
	if err != nil {
		return nil, err
	}
	readCluster := func(ctx context.Context) (kube.Cluster, error) {
		return kube.ClusterFromClusterInfo(ctx, client.ConfigMaps(kube.ClusterInfoNamespace))
	}
	source := kube.ClusterInfoNamespace + "/cluster-info"
	if cfg.Kubeconfig != "" {
		source = cfg.Kubeconfig
		readCluster = func(context.Context) (kube.Cluster, error) { return kube.ClusterFromKubeconfig(cfg.Kubeconfig) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterInfoTimeout)
	defer cancel()
	cluster, err := readCluster(ctx)
	if err != nil {
		return nil, err
	}
	log.Info("kube backend: api", "api_server", rc.Host, "join_source", source,
		"join_api_address", cluster.APIAddress, "join_ca_hash", cluster.CAHash)
	kube.CheckAPIServer(client.RESTClient(), startupCheckTimeout, log)
	// Informers and the readiness check have clients of their own: their
	// own rate limiters, so that a boot storm's token requests neither
	// starve them nor are starved by them, and for informers no
	// per-request timeout to cut their watches.
	watchClient, err := kube.WatchClient(rc)
	if err != nil {
		return nil, err
	}
	readyClient, err := kube.ReadyClient(rc)
	if err != nil {
		return nil, err
	}
	secrets := kubeapi.NewSecretCache(watchClient.Secrets(metav1.NamespaceSystem))
	joinDetails := kube.NewClusterValue(cluster)
	slots := &token.Slots{
		Store: &kubeapi.Store{Secrets: client.Secrets(metav1.NamespaceSystem), Cluster: joinDetails,
			Timeout: cfg.CommandTimeout, Cache: secrets},
		Max:        cfg.MaxTokens,
		MaxUnnamed: cfg.MaxUnnamedTokens,
		TTL:        cfg.TokenTTL,
	}
	access := &cachedCheck{
		Check:   kube.CanCreateBootstrapTokens(readyClient),
		MaxAge:  readyMaxAge,
		Timeout: readyTimeout,
	}
	nodes := nodewatch.New(watchClient.Nodes())
	return &backend{
		tokens: slots,
		nodes:  &node.API{Nodes: client.Nodes(), Cache: nodes, Timeout: cfg.CommandTimeout},
		ready:  access.Err,
		run: func(ctx context.Context) {
			go secrets.Run(ctx)
			go kube.FollowCluster(ctx, readCluster, joinDetails.Load, joinDetails.Store, readyMaxAge, log)
			go nodes.Run(ctx)
			nodes.RevokeOnReady(ctx, slots, cfg.TokenTTL, log)
		},
	}, nil
}
