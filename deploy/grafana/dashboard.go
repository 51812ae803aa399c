// Package grafana builds the Grafana dashboard of the epoxy-extension server
// with the Grafana Foundation SDK, from the same series as the alerts: the
// recording rules of deploy/prometheus/rules.yml (load them in the
// Prometheus the dashboard reads). `go run ./deploy/grafana/generate`
// writes it to deploy/grafana/epoxy-extension-server.json, the file
// operators import; a test checks that the committed file is what this
// package builds.
package grafana

import (
	"encoding/json"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// File is the dashboard's file name in deploy/grafana.
const File = "epoxy-extension-server.json"

// UID is the dashboard's uid, stable across imports so that links to it
// keep working.
const UID = "epoxy-extension-server"

// datasource is the Prometheus data source the operator picks at import
// (the dashboard's variable).
var datasource = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

// query is one line of a panel: a PromQL expression and its legend.
type query struct{ expr, legend string }

// panel is one time series panel.
type panel struct {
	title, description, unit string
	queries                  []query
}

// rows are the dashboard's rows of panels, top to bottom.
var rows = []struct {
	title  string
	panels []panel
}{
	{"Requests", []panel{
		{"Request rate by endpoint", "Requests per second to each extension endpoint, all status codes.", "reqps", []query{
			{`job_endpoint:epoxy_extensions_requests:rate5m`, "{{endpoint}}"},
		}},
		{"Errors by cause", "Share of each endpoint's requests that ended in each error code: 400 bad request, 403 caller not allowed, 408 stale last_boot, 429 token limit, 500 backend failed, 503 no command slot.", "percentunit", []query{
			{`job_endpoint_code:epoxy_extensions_request_errors:ratio_rate5m`, "{{endpoint}} {{code}}"},
		}},
		{"Latency p50 and p99", "Request duration by endpoint, all status codes.", "s", []query{
			{`job_endpoint:epoxy_extensions_request_duration_seconds:p50_rate5m`, "p50 {{endpoint}}"},
			{`job_endpoint:epoxy_extensions_request_duration_seconds:p99_rate5m`, "p99 {{endpoint}}"},
		}},
	}},
	{"Tokens and nodes", []panel{
		{"Tokens issued and nodes deleted", "Join tokens issued (200 on allocate_k8s_token) and nodes deleted (200 on node delete), per second.", "reqps", []query{
			{`job_endpoint_code:epoxy_extensions_requests:rate5m{endpoint="allocate_k8s_token", code="200"}`, "tokens issued"},
			{`job_endpoint_code:epoxy_extensions_requests:rate5m{endpoint="node_delete", code="200"}`, "nodes deleted"},
		}},
		{"Tokens revoked", "Join tokens deleted before they expired, per second: node_delete when the host left, node_ready when its Node became Ready after the token was made (api backend).", "reqps", []query{
			{`sum by (why) (rate(epoxy_extensions_tokens_revoked_total{job="epoxy-extension-server"}[5m]))`, "{{why}}"},
		}},
		{"Token and node failures (5xx share)", "Share of requests answered 5xx: machines that did not get what they asked for. The token-failure alert fires above 10% for 10 minutes.", "percentunit", []query{
			{`job_endpoint:epoxy_extensions_request_5xx:ratio_rate5m`, "{{endpoint}}"},
		}},
	}},
	{"Refusals", []panel{
		{"Refusals by reason", "Requests refused before reaching a backend, per second, by reason (source, method, decode, hostname, boot_too_old, token_limit, busy, …).", "reqps", []query{
			{`sum by (job, reason) (job_endpoint_reason:epoxy_extensions_refusals:rate5m)`, "{{reason}}"},
		}},
		{"Refusals by endpoint", "Refusals per second by endpoint (v1 and v2 tokens apart).", "reqps", []query{
			{`sum by (job, endpoint) (job_endpoint_reason:epoxy_extensions_refusals:rate5m)`, "{{endpoint}}"},
		}},
	}},
	{"Backends", []panel{
		{"Backend latency p50 and p99", "Duration of each request's backend work (kubectl, kube_api, datastore), failures included; for exec, the wait for a command slot counts.", "s", []query{
			{`job_backend:epoxy_extensions_backend_duration_seconds:p50_rate5m`, "p50 {{backend}}"},
			{`job_backend:epoxy_extensions_backend_duration_seconds:p99_rate5m`, "p99 {{backend}}"},
		}},
		{"Backend p99 as a share of its deadline", "p99 backend latency over -backend-timeout. The deadline alert fires above 50% for 15 minutes.", "percentunit", []query{
			{`job_backend:epoxy_extensions_backend_deadline_used:ratio_p99_rate5m`, "{{backend}}"},
		}},
		{"Backend failures", "Failed backend calls per second (dns is the BMC name lookup).", "reqps", []query{
			{`job_backend:epoxy_extensions_backend_failures:rate5m`, "{{backend}}"},
		}},
		{"Kubernetes API latency p99 (api backend)", "p99 of each API call attempt by operation.", "s", []query{
			{`job_operation:epoxy_extensions_kube_api_call_duration_seconds:p99_rate5m`, "{{operation}}"},
		}},
		{"Kubernetes API errors (api backend)", "Failed API call attempts per second by operation and reason, retried ones included; only those above zero.", "reqps", []query{
			{`job_operation_reason:epoxy_extensions_kube_api_errors:rate5m > 0`, "{{operation}} {{reason}}"},
		}},
	}},
	{"Capacity", []panel{
		{"Commands (exec backend)", "kubectl runs at once, and runs waiting for a slot (-max-concurrent-commands).", "short", []query{
			{`sum by (job) (epoxy_extensions_commands_running{job="epoxy-extension-server"})`, "running"},
			{`job:epoxy_extensions_command_queue_length:max_over_time5m`, "waiting (max over 5m)"},
		}},
		{"File descriptors used", "Share of the process's file descriptor limit in use (connections, mostly).", "percentunit", []query{
			{`instance:process_fds_used:ratio`, "{{instance}}"},
		}},
		{"Connections", "Client connections open (bounded by -max-connections), idle ones closed to make room, and requests shed at the limit, per second.", "short", []query{
			{`sum by (instance) (epoxy_extensions_open_connections{job="epoxy-extension-server"})`, "open {{instance}}"},
			{`sum by (job) (rate(epoxy_extensions_connections_evicted_total{job="epoxy-extension-server"}[5m]))`, "evicted/s"},
			{`sum by (job) (rate(epoxy_extensions_connections_shed_total{job="epoxy-extension-server"}[5m]))`, "shed/s"},
		}},
		{"Up", "1 while Prometheus scrapes the server.", "short", []query{
			{`up{job="epoxy-extension-server"}`, "{{instance}}"},
		}},
	}},
}

// Dashboard builds the dashboard.
//
//lint:ignore SA1019 the classic dashboard schema, which every Grafana imports; dashboardv2 needs Grafana 12 with its v2 dashboards turned on.
func Dashboard() (dashboard.Dashboard, error) {
	//lint:ignore SA1019 the classic schema, as above.
	b := dashboard.NewDashboardBuilder("ePoxy extension server").
		Uid(UID).
		Description("Requests, errors by cause, latency, backends, refusals, tokens issued and revoked, connections and capacity of the epoxy-extension server (job epoxy-extension-server), from the recording rules in deploy/prometheus/rules.yml.").
		Tags([]string{"epoxy", "m-lab"}).
		Refresh("1m").
		Time("now-6h", "now").
		Timezone(common.TimeZoneUtc).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").
			Label("Data source").
			Type("prometheus"))
	// Grafana wants a distinct id on every panel, rows included.
	var id uint32
	for _, row := range rows {
		id++
		b = b.WithRow(dashboard.NewRowBuilder(row.title).Id(id))
		for _, p := range row.panels {
			id++
			tp := timeseries.NewPanelBuilder().
				Id(id).
				Title(p.title).
				Description(p.description).
				Datasource(datasource).
				Unit(p.unit).
				Min(0).
				Height(8).
				Span(8).
				Legend(common.NewVizLegendOptionsBuilder().
					DisplayMode(common.LegendDisplayModeList).
					Placement(common.LegendPlacementBottom).
					ShowLegend(true))
			for i, q := range p.queries {
				tp = tp.WithTarget(prometheus.NewDataqueryBuilder().
					Datasource(datasource).
					RefId(string(rune('A' + i))).
					Expr(q.expr).
					LegendFormat(q.legend))
			}
			b = b.WithPanel(tp)
		}
	}
	return b.Build()
}

// JSON returns the dashboard as the file operators import, indented, with
// a final newline.
func JSON() ([]byte, error) {
	d, err := Dashboard()
	if err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}
