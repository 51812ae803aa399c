// Command epoxy-extensions serves the ePoxy extensions that M-Lab machines
// call while they boot: Kubernetes join tokens, BMC password storage and node
// deletion. See README.md for flags and endpoints.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/m-lab/go/flagx"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/m-lab/epoxy-extensions/connlimit"
	"github.com/m-lab/epoxy-extensions/handler"
	"github.com/m-lab/epoxy-extensions/runas"
	"github.com/m-lab/epoxy-extensions/storage"
)

// Every flag of the server; flagx also reads each from the environment
// (LISTEN_ADDRESS for -listen-address, and so on).
var (
	listenAddress    = flag.String("listen-address", ":8800", "Address to listen on for HTTP requests, or several separated by commas (\":8800,:8801\" serves the two extension servers ePoxy v1.2.5 names from one process).")
	kubeBackend      = flag.String("kube-backend", "exec", "How to reach Kubernetes: exec runs kubectl from -bin-dir; api calls the API server in-process, with -kubeconfig or, when that is empty, the pod's service account.")
	kubeAPIQPS       = flag.Float64("kube-api-qps", 100, "With -kube-backend=api, the most API requests per second the server sends, on average.")
	kubeAPIBurst     = flag.Int("kube-api-burst", 200, "With -kube-backend=api, the most API requests the server sends in a burst above -kube-api-qps.")
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
	maxConnections   = flag.Int("max-connections", 4096, "Most client connections open at once; at the limit, new ones wait while the longest-idle connection is closed to make room (busy ones are never cut).")
	shutdownDelay    = flag.Duration("shutdown-delay", 15*time.Second, "After SIGTERM, how long /ready answers 503 while the server still serves everything (each response with Connection: close), so load balancers take it out, before it drains; covers a health check of 5s interval and unhealthy threshold 2 (10s) with a margin.")
	dnsServer        = flag.String("dns-server", "", "DNS server (host:port) to resolve BMC names with; empty uses the system's resolver.")
	shutdownTimeout  = flag.Duration("shutdown-timeout", 0, "How long the drain after -shutdown-delay waits for requests in flight; 0 means backend-timeout plus 5s.")
)

func main() {
	os.Exit(run())
}

// run is the whole server: it reads the flags, starts (checks the set-up,
// builds the backends, binds the addresses), serves until SIGTERM or
// SIGINT, then shuts down, and returns the exit status: 0 after a clean
// shutdown, 1 when start-up or shutdown failed, 2 for bad flags. Its
// deferred clean-ups (the kubeconfig copy, the Datastore clients) run on
// every path.
func run() int {
	// One log format: JSON lines on stderr. SetDefault also routes the log
	// package through it, which flagx (its "Argument" lines) uses.
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	slog.SetDefault(log)
	klog.SetSlogLogger(log) // client-go logs through klog
	flag.Parse()
	if err := flagx.ArgsFromEnv(flag.CommandLine); err != nil {
		log.Error("could not read flags from the environment", "error", err)
		return 2
	}
	// kubeadm reads --ttl 0 as "never expires": a join credential for ever.
	if *tokenTTL <= 0 || *backendTimeout <= 0 || *commandTimeout <= 0 || *maxBootAge <= 0 {
		log.Error("-token-ttl, -backend-timeout, -command-timeout and -max-boot-age must be positive")
		return 2
	}
	s, err := start(log)
	var backendErr *backendError
	switch {
	case errors.As(err, &backendErr):
		log.Error("could not set up the Kubernetes backend", "kube_backend", *kubeBackend, "error", backendErr.err)
		return 1
	case err != nil:
		log.Error("cannot start: "+err.Error(), "kube_backend", *kubeBackend)
		return 1
	}
	defer s.close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The backend's background work (watches, following cluster-info)
	// runs until the last request is answered.
	if s.background != nil {
		bg, stopBackground := context.WithCancel(context.Background())
		defer stopBackground()
		go s.background(bg)
	}
	if err := s.serve(ctx); err != nil {
		log.Error("server stopped", "error", err)
		return 1
	}
	stop() // a second signal ends the process at once
	status := s.shutdown()
	if err := s.close(); err != nil {
		status = 1
	}
	log.Info("stopped", "exit_status", status)
	return status
}

// server is a started server: its handler, HTTP server, bound listeners
// and what must be closed at exit.
type server struct {
	log       *slog.Logger
	srv       *handler.Server
	http      *http.Server
	listeners []net.Listener
	addresses []string
	// background does the backend's background work (watches, following
	// cluster-info); nil when it has none.
	background func(ctx context.Context)
	store      *storage.Store
	dropped    runas.Dropped
	conns      *connlimit.Limiter
	closed     bool
}

// backendError is a failure to build the Kubernetes backend once the
// set-up checks passed: the API server refused what the backend reads at
// start (cluster-info), or the kubeconfig holds no usable cluster.
type backendError struct{ err error }

func (e *backendError) Error() string {
	return "could not set up the Kubernetes backend: " + e.err.Error()
}
func (e *backendError) Unwrap() error { return e.err }

// start reads the flags into the server: the callers it admits and trusts,
// the Kubernetes backend (after setUp checked what it needs, and dropped
// root with -run-as), the Datastore store, the handler, and the bound
// listening sockets (systemd's, else every -listen-address).
func start(log *slog.Logger) (*server, error) {
	sources, err := handler.ParseSources(*allowedSources)
	if err != nil {
		return nil, fmt.Errorf("-allowed-sources: %w", err)
	}
	if sources.AllowsAny() {
		log.Warn("-allowed-sources admits every address: anyone who reaches this port can mint join tokens, store BMC passwords and delete nodes")
	}
	proxies, verifier, err := callerTrust(*trustedProxies, *vmAudience, *vmProjects, log)
	if err != nil {
		return nil, err
	}
	cfg := backendConfig{
		Backend: *kubeBackend, BinDir: *binDir, Kubeconfig: *kubeconfig,
		QPS: *kubeAPIQPS, Burst: *kubeAPIBurst, MaxCommands: *maxCommands,
		CommandTimeout: *commandTimeout, TokenTTL: *tokenTTL,
		MaxTokens: *maxTokensPerHost, MaxUnnamedTokens: *maxUnnamed,
	}
	s := &server{log: log}
	if s.dropped, err = setUp(&cfg, *runAs, log); err != nil {
		return nil, err
	}
	kb, err := newKubeBackend(cfg, log)
	if err != nil {
		s.close()
		return nil, &backendError{err}
	}
	s.background = kb.run
	var resolver storage.Resolver = net.DefaultResolver
	if *dnsServer != "" {
		resolver = storage.NewResolver(*dnsServer)
	}
	s.store = &storage.Store{Resolver: resolver, NewClient: storage.NewDatastoreClient, Project: *datastoreProject}
	s.srv = &handler.Server{
		Tokens:  kb.tokens,
		Nodes:   kb.nodes,
		Revoker: kb.tokens,
		Creds:   s.store,
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
	s.http = newHTTPServer(handler.NewMux(s.srv, prometheus.DefaultGatherer), *backendTimeout, log)
	// The sockets systemd passed, else every -listen-address bound before
	// any is served (listen.go). One connection limit covers them all.
	bound, err := listen(*listenAddress, log)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("could not listen: %w", err)
	}
	s.conns = connlimit.New(*maxConnections)
	for _, ln := range bound {
		s.listeners = append(s.listeners, s.conns.Listen(ln))
		s.addresses = append(s.addresses, ln.Addr().String())
	}
	s.http.ConnState = s.conns.ConnState
	s.http.ConnContext = s.conns.ConnContext
	s.http.Handler = s.conns.Gate(s.http.Handler, handler.IsHealthCheck)
	return s, nil
}

// serve serves every listener until ctx ends (nil) or one stops serving
// (its error).
func (s *server) serve(ctx context.Context) error {
	served := make(chan error, len(s.listeners))
	for _, ln := range s.listeners {
		go func() { served <- s.http.Serve(ln) }()
	}
	s.log.Info("serving", "addresses", s.addresses, "kube_backend", *kubeBackend, "backend_timeout", backendTimeout.String())
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
		return nil
	}
}

// shutdown takes the server out of rotation first: /ready fails at once,
// everything else is still served for -shutdown-delay; then it drains the
// requests in flight for -shutdown-timeout. It returns 1 when some request
// did not finish in time, else 0.
func (s *server) shutdown() int {
	s.srv.Drain()
	// From now on every response carries Connection: close, and connections
	// idle between requests are closed (never one serving a request), so
	// that clients pooling connections (ePoxy's proxy) open new ones, which
	// the load balancer sends to another replica.
	s.http.SetKeepAlivesEnabled(false)
	s.log.Info("shutting down: not ready, still serving", "delay", shutdownDelay.String())
	time.Sleep(*shutdownDelay)
	grace := *shutdownTimeout
	if grace <= 0 {
		grace = *backendTimeout + 5*time.Second
	}
	s.log.Info("shutting down: draining requests in flight", "grace", grace.String())
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	// No new connection from here on (with socket activation they wait in
	// the socket for the next process), and a moment for those accepted
	// to send their requests: Shutdown drops, unanswered, a request it
	// finishes reading after it began.
	for _, ln := range s.listeners {
		ln.Close()
	}
	silence, cancelSilence := context.WithTimeout(ctx, min(firstRequestWait, grace/2))
	s.conns.WaitSilent(silence)
	cancelSilence()
	if err := s.http.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Error("shutdown did not drain every request", "error", err)
		return 1
	}
	return 0
}

// close releases what start acquired: the Datastore clients and the
// private copy of the kubeconfig. Only its first call acts; it returns
// the first failure, logged.
func (s *server) close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	var first error
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			s.log.Error("closing datastore clients", "error", err)
			first = err
		}
	}
	if err := s.dropped.Cleanup(); err != nil {
		s.log.Error("removing the private folder", "error", err)
		if first == nil {
			first = err
		}
	}
	return first
}

// firstRequestWait bounds how long shutdown waits, once no connection is
// accepted any more, for the connections accepted just before to send
// their requests; it is part of -shutdown-timeout, at most half of it.
const firstRequestWait = 2 * time.Second

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
