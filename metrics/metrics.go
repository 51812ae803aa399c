// Package metrics defines the Prometheus metrics of epoxy-extensions. The
// three request histograms keep the names and labels that M-Lab's alerts and
// dashboards already use. Every series that a rule in deploy/prometheus reads
// exists from start-up, at zero (see init.go), so that a rate reads 0 rather
// than nothing.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// TokenBuckets and NodeBuckets are the request histograms' buckets in
// seconds, on periods people think in: exactly those of M-Lab's original
// server, whose series a rollout aggregates with ours. The token and BMC
// histograms end at 300 s, the node histogram at 30 s.
var (
	TokenBuckets = []float64{0.001, 0.01, 0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0}
	NodeBuckets  = []float64{0.001, 0.01, 0.1, 1.0, 5.0, 10.0, 30.0}
)

var (
	// TokenRequestDuration times /v1 and /v2 allocate_k8s_token requests.
	TokenRequestDuration = requestDuration("allocate_k8s_token", TokenBuckets)
	// BMCRequestDuration times bmc_store_password requests.
	BMCRequestDuration = requestDuration("bmc_store_password", TokenBuckets)
	// NodeRequestDuration times node delete requests.
	NodeRequestDuration = requestDuration("node", NodeBuckets)

	// Refusals counts requests refused before reaching a backend, by
	// endpoint and reason (for example "method", "decode", "hostname",
	// "boot_too_old").
	Refusals = promauto.NewCounterVec(
		prometheus.CounterOpts{
			Name: "epoxy_extensions_refusals_total",
			Help: "Requests refused before reaching a backend, by endpoint and reason.",
		},
		[]string{"endpoint", "reason"},
	)

	// BackendFailures counts failed backend calls by backend ("kubectl",
	// "kube_api", "dns", "datastore").
	BackendFailures = promauto.NewCounterVec(
		prometheus.CounterOpts{
			Name: "epoxy_extensions_backend_failures_total",
			Help: "Failed backend calls by backend.",
		},
		[]string{"backend"},
	)

	// BackendDuration times each request's backend work by backend
	// ("kubectl", "kube_api", "datastore"): for the exec backend
	// the wait for a command slot plus the run, for BMC the DNS lookup plus
	// the Datastore write. Failed calls count too.
	BackendDuration = promauto.NewHistogramVec(
		prometheus.HistogramOpts{
			Name:    "epoxy_extensions_backend_duration_seconds",
			Help:    "Duration of each request's backend work by backend, failures included.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 90, 120, 180, 300},
		},
		[]string{"backend"},
	)

	// BackendTimeout is the deadline of each request's backend work
	// (-backend-timeout), so that alerts can compare backend latency with
	// it whatever the flag says.
	BackendTimeout = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "epoxy_extensions_backend_timeout_seconds",
		Help: "Deadline of each request's backend work (-backend-timeout).",
	})

	// CommandQueueLength is the number of kubectl runs waiting for a free
	// slot (exec backend); creates waiting together count as one run.
	CommandQueueLength = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "epoxy_extensions_command_queue_length",
		Help: "Commands waiting for a free slot.",
	})

	// CommandsRunning is the number of kubectl runs now.
	CommandsRunning = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "epoxy_extensions_commands_running",
		Help: "Commands running now.",
	})

	// CommandWaitSeconds times each run's wait for a free slot.
	CommandWaitSeconds = promauto.NewHistogram(prometheus.HistogramOpts{
		Name:    "epoxy_extensions_command_wait_seconds",
		Help:    "Time commands waited for a free slot, including those that gave up.",
		Buckets: []float64{0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120},
	})

	// TokensRevoked counts join tokens deleted before they expired, by why
	// ("node_delete": the host left; "node_ready": its Node became Ready
	// after the token was made).
	TokensRevoked = promauto.NewCounterVec(
		prometheus.CounterOpts{
			Name: "epoxy_extensions_tokens_revoked_total",
			Help: "Join tokens deleted before they expired, by why.",
		},
		[]string{"why"},
	)

	// OpenConnections is the number of client connections open now
	// (bounded by -max-connections).
	OpenConnections = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "epoxy_extensions_open_connections",
		Help: "Client connections open now.",
	})

	// ConnectionsEvicted counts idle connections closed to make room for a
	// new one at -max-connections.
	ConnectionsEvicted = promauto.NewCounter(prometheus.CounterOpts{
		Name: "epoxy_extensions_connections_evicted_total",
		Help: "Idle client connections closed to make room for new ones at the connection limit.",
	})

	// ConnectionsShed counts requests answered 503 because every connection
	// slot and half the reserve were taken.
	ConnectionsShed = promauto.NewCounter(prometheus.CounterOpts{
		Name: "epoxy_extensions_connections_shed_total",
		Help: "Requests answered 503 at the connection limit, with every connection busy.",
	})

	// KubeAPIDuration times each attempt of each Kubernetes API call the
	// api backend makes, by operation ("create_secret", "delete_node",
	// "get_cluster_info", "get_version") and result ("ok" or the reason it
	// failed).
	KubeAPIDuration = promauto.NewHistogramVec(
		prometheus.HistogramOpts{
			Name:    "epoxy_extensions_kube_api_call_duration_seconds",
			Help:    "Duration of each Kubernetes API call attempt by operation and result.",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		},
		[]string{"operation", "result"},
	)

	// KubeAPIErrors counts failed Kubernetes API call attempts by operation
	// and reason ("unreachable", "timeout", "forbidden", "not_found", …);
	// a NotFound on delete counts here although the request succeeds.
	KubeAPIErrors = promauto.NewCounterVec(
		prometheus.CounterOpts{
			Name: "epoxy_extensions_kube_api_errors_total",
			Help: "Failed Kubernetes API call attempts by operation and reason.",
		},
		[]string{"operation", "reason"},
	)
)

// requestDuration registers the histogram <endpoint>_request_duration_seconds
// with the method and code labels promhttp.InstrumentHandlerDuration fills.
func requestDuration(endpoint string, buckets []float64) *prometheus.HistogramVec {
	return promauto.NewHistogramVec(
		prometheus.HistogramOpts{
			Name:    endpoint + "_request_duration_seconds",
			Help:    "Duration of " + endpoint + " requests by method and status code.",
			Buckets: buckets,
		},
		[]string{"method", "code"},
	)
}
