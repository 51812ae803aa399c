package metrics

import "github.com/prometheus/client_golang/prometheus"

// The label values the server can produce, known in advance. init creates
// each of these series at zero, as Prometheus's instrumentation guide
// advises: an alert on rate(x[5m]) then reads 0 from start-up instead of
// nothing, and absent() is left for the server being down.
var (
	// requestCodes lists, per request histogram, the status codes a POST
	// can end in. 405 is left out: its method label is whatever the caller
	// sent.
	requestCodes = []struct {
		histogram *prometheus.HistogramVec
		codes     []string
	}{
		{TokenRequestDuration, []string{"200", "400", "401", "403", "408", "429", "500", "503"}},
		{BMCRequestDuration, []string{"200", "400", "403", "408", "500"}},
		{NodeRequestDuration, []string{"200", "400", "403", "408", "500", "503"}},
	}

	// refusalReasons lists, per endpoint, the reasons it can refuse for.
	refusalReasons = map[string][]string{
		"allocate_k8s_token_v1": append(commonReasons(), "token_limit", "busy", "identity_missing", "identity_invalid", "identity_unavailable"),
		"allocate_k8s_token_v2": append(commonReasons(), "token_limit", "busy", "identity_missing", "identity_invalid", "identity_unavailable"),
		"bmc_store_password":    append(commonReasons(), "password", "not_machine", "not_trusted"),
		"node_delete":           append(commonReasons(), "busy", "control_plane_node", "not_own_node"),
	}

	// failingBackends name every backend that can fail, timedBackends those
	// timed: a BMC store's DNS lookup can fail on its own but is timed with
	// its Datastore write.
	failingBackends = []string{"kubectl", "kube_api", "dns", "datastore"}
	timedBackends   = []string{"kubectl", "kube_api", "datastore"}

	// kubeAPIOperations are the API calls requests make (those made once
	// at start are left to appear when they happen), and kubeAPIReasons
	// the reasons kube.Reason gives a failed attempt.
	kubeAPIOperations = []string{"create_secret", "get_node", "delete_node"}
	// revocationReasons are why join tokens are revoked.
	revocationReasons = []string{"node_delete", "node_ready"}
	kubeAPIReasons    = []string{"unreachable", "timeout", "deadline", "canceled", "server_error",
		"too_many_requests", "unauthorized", "forbidden", "invalid", "not_found",
		"already_exists", "conflict", "other"}
)

// commonReasons returns the refusals every extension endpoint can make.
func commonReasons() []string {
	return []string{"source", "method", "body_too_large", "decode", "no_v1",
		"hostname", "boot_too_old", "boot_in_future"}
}

func init() {
	for _, rc := range requestCodes {
		for _, code := range rc.codes {
			// promhttp writes the method in lower case.
			rc.histogram.WithLabelValues("post", code)
		}
	}
	for endpoint, reasons := range refusalReasons {
		for _, reason := range reasons {
			Refusals.WithLabelValues(endpoint, reason)
		}
	}
	for _, b := range failingBackends {
		BackendFailures.WithLabelValues(b)
	}
	for _, b := range timedBackends {
		BackendDuration.WithLabelValues(b)
	}
	for _, why := range revocationReasons {
		TokensRevoked.WithLabelValues(why)
	}
	for _, op := range kubeAPIOperations {
		KubeAPIDuration.WithLabelValues(op, "ok")
		for _, reason := range kubeAPIReasons {
			KubeAPIErrors.WithLabelValues(op, reason)
		}
	}
}
