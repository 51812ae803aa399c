// Command epoxy-extensions serves the ePoxy extensions that M-Lab machines
// call while they boot: Kubernetes join tokens, BMC password storage and node
// deletion. See README.md for flags and endpoints.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/m-lab/go/flagx"
	"github.com/m-lab/go/rtx"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/m-lab/epoxy-extensions/connlimit"
	"github.com/m-lab/epoxy-extensions/handler"
	"github.com/m-lab/epoxy-extensions/storage"
)

var (
	listenAddress    = flag.String("listen-address", ":8800", "Address to listen on for HTTP requests, or several separated by commas (\":8800,:8801\" serves the two extension servers ePoxy v1.2.5 names from one process).")
	binDir           = flag.String("bin-dir", "/usr/bin", "Directory holding the kubectl binary the exec backend runs (M-Lab's unit mounts /opt/bin, which also holds kubeadm).")
	kubeconfig       = flag.String("kubeconfig", "", "Kubeconfig for the cluster. exec: empty finds it as kubeadm does ($KUBECONFIG, else ~/.kube/config, else /etc/kubernetes/admin.conf), and the file found is passed to every kubectl run and read for the join details; api: empty means $KUBECONFIG, else the pod's service account, else /etc/kubernetes/admin.conf. A missing or unreadable file stops the server at start.")
	runAs            = flag.String("run-as", "", "When started as root, the user (uid:gid or names) to become once the kubeconfig is read: it is copied, with the files it refers to embedded, into a folder only that user can read, and kubectl runs as that user too. Empty stays as started. The container image sets 65532:65532.")
	tokenTTL         = flag.Duration("token-ttl", 5*time.Minute, "Lifetime of each join token.")
	maxBootAge       = flag.Duration("max-boot-age", 120*time.Minute, "Refuse (408) machines whose last_boot is older than this.")
	maxClockSkew     = flag.Duration("max-clock-skew", 5*time.Minute, "Refuse (400) a last_boot further than this in the future.")
	backendTimeout   = flag.Duration("backend-timeout", 3*time.Minute, "Deadline for each request's backend work: waiting for a command slot plus the kubectl runs, or a DNS lookup plus Datastore write.")
	commandTimeout   = flag.Duration("command-timeout", 30*time.Second, "Deadline for one kubectl run (a program still running then is killed with its process group), or with -kube-backend=api for one API call, retries included.")
	datastoreProject = flag.String("datastore-project", "", "Google Cloud project for BMC credentials; empty uses the project in each machine's hostname.")
	maxCommands      = flag.Int("max-concurrent-commands", 2*runtime.NumCPU(), "Most kubectl processes running at once; more requests wait their turn within -backend-timeout.")
	allowedSources   = flag.String("allowed-sources", "", "Comma-separated CIDRs allowed to call the extension endpoints (ePoxy, VM subnets); empty allows private and local addresses only (10/8, 172.16/12, 192.168/16, 100.64/10, 127/8, fc00::/7, ::1), \"any\" every address. Others get 403 before their body is read.")
	trustedProxies   = flag.String("trusted-proxies", "", "Comma-separated CIDRs of the callers that speak for other machines (the ePoxy boot server), which may name any machine. Every other caller is direct and acts only for itself: it may store no BMC password (403), delete only the Node whose addresses include its own (403), and with -vm-identity-audience must prove its identity for a token (401). Empty trusts every caller, as M-Lab's original server does, and logs a warning.")
	vmAudience       = flag.String("vm-identity-audience", "", "When set, a direct caller's token request must carry a Google Compute Engine instance identity token (Authorization: Bearer, format=full) for this audience, from an instance of -vm-identity-projects, entitled to the hostname it asks for. Needs -trusted-proxies.")
	vmProjects       = flag.String("vm-identity-projects", "", "Comma-separated Google Cloud projects whose instances may prove their identity (-vm-identity-audience).")
	maxTokensPerHost = flag.Int("max-tokens-per-host", 3, "Most live (unexpired) join tokens one hostname may hold at once, counted in the cluster across every replica and restart (429 beyond, until the oldest expires); 0 means no limit, and no revocation.")
	maxUnnamed       = flag.Int("max-unnamed-tokens", 10, "Most live join tokens that requests without a hostname (control-plane VMs joining) may hold between them; 0 means no limit.")
	_                = flag.Duration("token-budget-window", 0, "Ignored; kept so that old command lines still start. -max-tokens-per-host now counts live tokens.")
	maxConnections   = flag.Int("max-connections", 4096, "Most client connections open at once; at the limit, new ones wait while the longest-idle connection is closed to make room (busy ones are never cut).")
	shutdownDelay    = flag.Duration("shutdown-delay", 15*time.Second, "After SIGTERM, how long /ready answers 503 while the server still serves everything (each response with Connection: close), so load balancers take it out, before it drains; covers a health check of 5s interval and unhealthy threshold 2 (10s) with a margin.")
	dnsServer        = flag.String("dns-server", "", "DNS server (host:port) to resolve BMC names with; empty uses the system's resolver.")
	shutdownTimeout  = flag.Duration("shutdown-timeout", 0, "How long the drain after -shutdown-delay waits for requests in flight; 0 means backend-timeout plus 5s.")
)

func main() {
	flag.Parse()
	// One log format: JSON lines on stderr. SetDefault also routes the log
	// package through it, which flagx (its "Argument" lines) and rtx use.
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	slog.SetDefault(log)
	klog.SetSlogLogger(log) // client-go logs through klog
	rtx.Must(flagx.ArgsFromEnv(flag.CommandLine), "could not read flags from the environment")

	// kubeadm reads --ttl 0 as "never expires": a join credential for ever.
	if *tokenTTL <= 0 || *backendTimeout <= 0 || *commandTimeout <= 0 || *maxBootAge <= 0 {
		log.Error("-token-ttl, -backend-timeout, -command-timeout and -max-boot-age must be positive")
		os.Exit(2)
	}
	sources, err := handler.ParseSources(*allowedSources)
	rtx.Must(err, "bad -allowed-sources")
	if sources.AllowsAny() {
		log.Warn("-allowed-sources admits every address: anyone who reaches this port can mint join tokens, store BMC passwords and delete nodes")
	}
	proxies, verifier, err := callerTrust(*trustedProxies, *vmAudience, *vmProjects, log)
	if err != nil {
		log.Error("cannot start: " + err.Error())
		os.Exit(1)
	}
	cfg := backendConfig{
		Backend: *kubeBackend, BinDir: *binDir, Kubeconfig: *kubeconfig,
		QPS: *kubeAPIQPS, Burst: *kubeAPIBurst, MaxCommands: *maxCommands,
		CommandTimeout: *commandTimeout, TokenTTL: *tokenTTL,
		MaxTokens: *maxTokensPerHost, MaxUnnamedTokens: *maxUnnamed,
	}
	dropped, err := setUp(&cfg, *runAs, log)
	if err != nil {
		log.Error("cannot start: "+err.Error(), "kube_backend", *kubeBackend)
		os.Exit(1)
	}
	kb, err := newKubeBackend(cfg, log)
	if err != nil {
		log.Error("could not set up the Kubernetes backend", "kube_backend", *kubeBackend, "error", err)
		dropped.Cleanup()
		os.Exit(1)
	}
	var resolver storage.Resolver = net.DefaultResolver
	if *dnsServer != "" {
		resolver = storage.NewResolver(*dnsServer)
	}
	store := &storage.Store{
		Resolver:  resolver,
		NewClient: storage.NewDatastoreClient,
		Project:   *datastoreProject,
	}
	srv := &handler.Server{
		Tokens:  kb.tokens,
		Nodes:   kb.nodes,
		Revoker: kb.tokens,
		Creds:   store,
		Validator: handler.Validator{
			MaxBootAge:     *maxBootAge,
			MaxClockSkew:   *maxClockSkew,
			Sources:        sources,
			TrustedProxies: proxies,
		},
		Identity:       verifier,
		BackendTimeout: *backendTimeout,
		Ready:          kb.ready,
		Log:            log,
	}
	httpServer := newHTTPServer(handler.NewMux(srv, prometheus.DefaultGatherer), *backendTimeout, log)
	// The sockets systemd passed, else every -listen-address bound before
	// any is served (listen.go). One connection limit covers them all.
	conns := connlimit.New(*maxConnections)
	var (
		listeners []net.Listener
		addresses []string
	)
	bound, err := listen(*listenAddress, log)
	rtx.Must(err, "could not listen")
	for _, ln := range bound {
		listeners = append(listeners, conns.Listen(ln))
		addresses = append(addresses, ln.Addr().String())
	}
	httpServer.ConnState = conns.ConnState
	httpServer.ConnContext = conns.ConnContext
	httpServer.Handler = conns.Gate(httpServer.Handler, handler.IsHealthCheck)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if kb.run != nil {
		bg, stopBackground := context.WithCancel(context.Background())
		defer stopBackground()
		go kb.run(bg)
	}
	served := make(chan error, len(listeners))
	for _, ln := range listeners {
		go func() { served <- httpServer.Serve(ln) }()
	}
	log.Info("serving", "addresses", addresses, "kube_backend", *kubeBackend, "backend_timeout", backendTimeout.String())

	select {
	case err := <-served:
		rtx.Must(err, "server stopped")
	case <-ctx.Done():
		stop() // a second signal ends the process at once
	}
	// Out of rotation first: /ready fails at once, everything else is still
	// served for -shutdown-delay, then the server drains.
	srv.Drain()
	// From now on every response carries Connection: close, and connections
	// idle between requests are closed (never one serving a request), so
	// that clients pooling connections (ePoxy's proxy) open new ones, which
	// the load balancer sends to another replica.
	httpServer.SetKeepAlivesEnabled(false)
	log.Info("shutting down: not ready, still serving", "delay", shutdownDelay.String())
	time.Sleep(*shutdownDelay)
	grace := *shutdownTimeout
	if grace <= 0 {
		grace = *backendTimeout + 5*time.Second
	}
	log.Info("shutting down: draining requests in flight", "grace", grace.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	status := 0
	if err := httpServer.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("shutdown did not drain every request", "error", err)
		status = 1
	}
	if err := store.Close(); err != nil {
		log.Error("closing datastore clients", "error", err)
		status = 1
	}
	if err := dropped.Cleanup(); err != nil {
		log.Error("removing the private folder", "error", err)
		status = 1
	}
	log.Info("stopped", "exit_status", status)
	stop()
	cancel()
	os.Exit(status)
}

// headerTimeout bounds how long a client may take to send its request
// headers, so stalled (slowloris) clients are dropped quickly.
var headerTimeout = 10 * time.Second

// newHTTPServer returns a server for h with timeouts on every phase of a
// connection. A response may wait for a whole backend call, so the write
// timeout follows backendTimeout.
func newHTTPServer(h http.Handler, backendTimeout time.Duration, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       headerTimeout + 20*time.Second,
		WriteTimeout:      backendTimeout + 15*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
