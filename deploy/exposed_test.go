package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/m-lab/epoxy-extensions/command"
	"github.com/m-lab/epoxy-extensions/handler"
	"github.com/m-lab/epoxy-extensions/storage"
	"github.com/m-lab/epoxy-extensions/token"
)

// Hosts whose requests the fakes below fail, each in its own way.
const (
	hostOK       = "mlab1-lga01.mlab-sandbox.measurement-lab.org"
	hostFail     = "mlab2-lga01.mlab-sandbox.measurement-lab.org"
	hostBusy     = "mlab3-lga01.mlab-sandbox.measurement-lab.org"
	hostNoDNS    = "mlab4-lga01.mlab-sandbox.measurement-lab.org"
	hostBudget   = "mlab1-abc01.mlab-sandbox.measurement-lab.org"
	errBackendUp = "backend down"
)

// fakeBackend is every backend at once: it fails for hostFail, is busy for
// hostBusy, and cannot resolve hostNoDNS's BMC. It names itself like the
// real backend it stands for.
type fakeBackend struct{ name string }

var (
	_ handler.TokenIssuer     = fakeBackend{}
	_ handler.NodeDeleter     = fakeBackend{}
	_ handler.CredentialStore = fakeBackend{}
)

func (f fakeBackend) Name() string { return f.name }

func (f fakeBackend) err(host string) error {
	switch host {
	case hostFail:
		return errors.New(errBackendUp)
	case hostBusy:
		return fmt.Errorf("%w: waited too long", command.ErrBusy)
	}
	return nil
}

func (f fakeBackend) Create(_ context.Context, host string) (token.Join, error) {
	return token.Join{APIAddress: "192.0.2.1:6443", Token: "abcdef.0123456789abcdef",
		CAHash: "sha256:" + strings.Repeat("0", 64)}, f.err(host)
}

func (f fakeBackend) Delete(_ context.Context, host string) error { return f.err(host) }

func (f fakeBackend) Put(_ context.Context, bmc storage.BMC, _ string) error {
	if strings.HasPrefix(bmc.Hostname, "mlab4d-") {
		return fmt.Errorf("%w %s: no such host", storage.ErrResolve, bmc.Hostname)
	}
	if strings.HasPrefix(bmc.Hostname, "mlab2d-") {
		return errors.New(errBackendUp)
	}
	return nil
}

// newMux returns the server's routes over fakes of the given Kubernetes
// backend names, allowing only sources.
func newMux(t *testing.T, tokens, nodes string, sources string) http.Handler {
	t.Helper()
	allowed, err := handler.ParseSources(sources)
	if err != nil {
		t.Fatal(err)
	}
	s := &handler.Server{
		Tokens:         fakeBackend{tokens},
		Nodes:          fakeBackend{nodes},
		Creds:          fakeBackend{"datastore"},
		Validator:      handler.Validator{MaxBootAge: 2 * time.Hour, MaxClockSkew: 5 * time.Minute, Sources: allowed},
		BackendTimeout: 3 * time.Minute,
		Budget:         &handler.Budget{Max: 1, Window: time.Hour},
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	return handler.NewMux(s, prometheus.DefaultGatherer)
}

// body is an extension request for host, booted age ago, with raw query q.
func body(host string, age time.Duration, q string) string {
	return fmt.Sprintf(`{"v1":{"hostname":%q,"last_boot":%q,"raw_query":%q}}`,
		host, time.Now().Add(-age).UTC().Format(time.RFC3339Nano), q)
}

// scrape returns the metric families at url.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return families
}

// TestEveryExpressionReadsWhatTheServerExposes starts the server's routes
// over fake backends (exec-named and api-named), scrapes them at start-up,
// sends one request of every kind (each endpoint's success, each refusal,
// each backend failure), scrapes again, and checks that every rule and
// dashboard expression names only metrics, labels and label values the
// server exposes, and that every series the requests made on the metrics
// alerts read was already there at start-up.
func TestEveryExpressionReadsWhatTheServerExposes(t *testing.T) {
	execSrv := httptest.NewServer(newMux(t, "kubeadm", "kubectl", ""))
	defer execSrv.Close()
	apiSrv := httptest.NewServer(newMux(t, "kube_api", "kube_api", ""))
	defer apiSrv.Close()
	strangerSrv := httptest.NewServer(newMux(t, "kubeadm", "kubectl", "192.0.2.0/24"))
	defer strangerSrv.Close()

	before := scrape(t, execSrv.URL+"/metrics")

	pw := "p=" + strings.Repeat("a", 20)
	requests := []struct {
		name         string
		srv          *httptest.Server
		method, path string
		body         string
		want         int
	}{
		{"token v1", execSrv, "POST", "/v1/allocate_k8s_token", body(hostOK, time.Minute, ""), 200},
		{"token v2", apiSrv, "POST", "/v2/allocate_k8s_token", body("", time.Minute, ""), 200},
		{"bmc", execSrv, "POST", "/v1/bmc_store_password", body(hostOK, time.Minute, pw), 200},
		{"node exec", execSrv, "POST", "/v1/node/delete", body(hostOK, time.Minute, ""), 200},
		{"node api", apiSrv, "POST", "/v1/node/delete", body(hostOK, time.Minute, ""), 200},
		{"source", strangerSrv, "POST", "/v2/allocate_k8s_token", body(hostOK, time.Minute, ""), 403},
		{"method", execSrv, "GET", "/v2/allocate_k8s_token", "", 405},
		{"body too large", execSrv, "POST", "/v1/node/delete", strings.Repeat(" ", 1<<20), 400},
		{"decode", execSrv, "POST", "/v1/bmc_store_password", "{", 400},
		{"no v1", execSrv, "POST", "/v1/allocate_k8s_token", "{}", 400},
		{"hostname", execSrv, "POST", "/v1/node/delete", body("--all", time.Minute, ""), 400},
		{"boot too old", execSrv, "POST", "/v2/allocate_k8s_token", body(hostOK, 3*time.Hour, ""), 408},
		{"boot in future", execSrv, "POST", "/v1/bmc_store_password", body(hostOK, -time.Hour, pw), 400},
		{"password", execSrv, "POST", "/v1/bmc_store_password", body(hostOK, time.Minute, ""), 400},
		{"not machine", execSrv, "POST", "/v1/bmc_store_password", body("vm.example.org", time.Minute, pw), 400},
		{"token budget first", execSrv, "POST", "/v2/allocate_k8s_token", body(hostBudget, time.Minute, ""), 200},
		{"token budget", execSrv, "POST", "/v2/allocate_k8s_token", body(hostBudget, time.Minute, ""), 429},
		{"busy token", execSrv, "POST", "/v2/allocate_k8s_token", body(hostBusy, time.Minute, ""), 503},
		{"busy node", execSrv, "POST", "/v1/node/delete", body(hostBusy, time.Minute, ""), 503},
		{"kubeadm fails", execSrv, "POST", "/v2/allocate_k8s_token", body(hostFail, time.Minute, ""), 500},
		{"kubectl fails", execSrv, "POST", "/v1/node/delete", body(hostFail, time.Minute, ""), 500},
		{"kube api fails", apiSrv, "POST", "/v2/allocate_k8s_token", body(hostFail, time.Minute, ""), 500},
		{"datastore fails", execSrv, "POST", "/v1/bmc_store_password", body(hostFail, time.Minute, pw), 500},
		{"dns fails", execSrv, "POST", "/v1/bmc_store_password", body(hostNoDNS, time.Minute, pw), 500},
	}
	for _, r := range requests {
		req, err := http.NewRequest(r.method, r.srv.URL+r.path, strings.NewReader(r.body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != r.want {
			t.Errorf("%s: %s %s answered %d, want %d", r.name, r.method, r.path, resp.StatusCode, r.want)
		}
	}

	after := scrape(t, execSrv.URL+"/metrics")
	t.Run("every refusal and backend failure happened", func(t *testing.T) {
		for _, c := range []struct{ family, label string }{
			{"epoxy_extensions_refusals_total", "reason"},
			{"epoxy_extensions_backend_failures_total", "backend"},
		} {
			counted := map[string]bool{}
			for _, m := range after[c.family].GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == c.label && m.GetCounter().GetValue() > 0 {
						counted[l.GetValue()] = true
					}
				}
			}
			for _, v := range labelValues(after[c.family])[c.label] {
				if !counted[v] {
					t.Errorf("no request made %s{%s=%q} count: add one to the requests above", c.family, c.label, v)
				}
			}
		}
		for _, reason := range handlerRefusals(t) {
			if !slices.Contains(labelValues(after["epoxy_extensions_refusals_total"])["reason"], reason) {
				t.Errorf("handler refuses for %q, which the server does not expose at start-up", reason)
			}
		}
	})
	t.Run("series exist from start-up", func(t *testing.T) {
		for _, name := range alertedFamilies(t) {
			had := seriesKeys(before[name])
			for _, k := range seriesKeys(after[name]) {
				if !slices.Contains(had, k) && !strings.Contains(k, `method="get"`) {
					t.Errorf("%s%s appeared only after a request: create it at zero in metrics/init.go", name, k)
				}
			}
		}
	})

	for _, e := range expressions(t) {
		t.Run(e.where, func(t *testing.T) {
			u, err := parseUsage(e.expr)
			if err != nil {
				t.Fatal(err)
			}
			checkUsage(t, u, after)
		})
	}
}

// expression is one PromQL expression of a rule or a dashboard panel.
type expression struct{ where, expr string }

// expressions returns every rule's and every dashboard panel's expression.
func expressions(t *testing.T) []expression {
	t.Helper()
	var out []expression
	for _, r := range rules(t) {
		out = append(out, expression{r.Record + r.Alert, r.Expr})
	}
	for _, q := range dashboardQueries(t) {
		out = append(out, expression{"dashboard/" + q.panel, q.expr})
	}
	return out
}

// alertedFamilies returns the server's metric families that alerts read,
// directly or through recording rules, with histograms as their base name.
func alertedFamilies(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, r := range rules(t) {
		u, err := parseUsage(r.Expr)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range u.selectors {
			if !strings.Contains(s.name, ":") && s.name != "up" && !slices.Contains(names, familyOf(s.name)) {
				names = append(names, familyOf(s.name))
			}
		}
	}
	return names
}

// familyOf returns the family a series name belongs to: a histogram's
// _bucket, _sum and _count series belong to the histogram.
func familyOf(name string) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && strings.HasSuffix(base, "_seconds") {
			return base
		}
	}
	return name
}

// seriesKeys returns each series of f as its label set, {a="x",b="y"}.
func seriesKeys(f *dto.MetricFamily) []string {
	var keys []string
	for _, m := range f.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
		}
		keys = append(keys, "{"+strings.Join(ls, ",")+"}")
	}
	return keys
}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// levelLabels returns the labels a recorded series keeps, from the level of
// its name (job_endpoint_code:… keeps job, endpoint and code); rules_test.yml
// checks each rule's exact label set.
func levelLabels(name string) []string {
	level, _, _ := strings.Cut(name, ":")
	labels := append([]string{}, targetLabels...)
	return append(labels, strings.Split(level, "_")...)
}

// checkUsage fails t if u names a metric, a label or a label value absent
// from families.
func checkUsage(t *testing.T, u usage, families map[string]*dto.MetricFamily) {
	t.Helper()
	recorded := recordedValues(t, families)
	available := append([]string{}, targetLabels...)
	for _, s := range u.selectors {
		switch {
		case s.name == "":
			t.Errorf("selector without a metric name: %v", s.matchers)
		case strings.Contains(s.name, ":"):
			values, ok := recorded[s.name]
			if !ok {
				t.Errorf("%s is recorded by no rule", s.name)
				continue
			}
			labels := levelLabels(s.name)
			available = append(available, labels...)
			for _, m := range s.matchers {
				if !slices.Contains(labels, m.label) {
					t.Errorf("%s has no label %q (it keeps %q)", s.name, m.label, labels)
					continue
				}
				if vs, ok := values[m.label]; ok && !matchesAny(m, vs) {
					t.Errorf("%s{%s%s%q} matches no series: %s takes %q", s.name, m.label, m.op, m.value, m.label, vs)
				}
			}
		case s.name == "up":
			// Prometheus's own series for every target.
		default:
			f := families[familyOf(s.name)]
			if f == nil {
				t.Errorf("the server exposes no metric %s", s.name)
				continue
			}
			values := labelValues(f)
			if strings.HasSuffix(s.name, "_bucket") {
				values["le"] = []string{"+Inf"}
			}
			for l := range values {
				available = append(available, l)
			}
			for _, m := range s.matchers {
				if slices.Contains(targetLabels, m.label) {
					continue
				}
				vs, ok := values[m.label]
				if !ok {
					t.Errorf("%s has no label %q", s.name, m.label)
					continue
				}
				if !matchesAny(m, vs) {
					t.Errorf("%s{%s%s%q} matches no series: %s takes %q", s.name, m.label, m.op, m.value, m.label, vs)
				}
			}
		}
	}
	for _, l := range u.grouping {
		if !slices.Contains(available, l) {
			t.Errorf("grouping by %q, a label none of the expression's series has", l)
		}
	}
}

// labelValues returns, per label name, the values f's series take.
func labelValues(f *dto.MetricFamily) map[string][]string {
	values := map[string][]string{}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if !slices.Contains(values[l.GetName()], l.GetValue()) {
				values[l.GetName()] = append(values[l.GetName()], l.GetValue())
			}
		}
	}
	return values
}

// matchesAny reports whether a positive matcher selects one of values; a
// negative one (!=, !~) passes, since it selects the others.
func matchesAny(m matcher, values []string) bool {
	switch m.op {
	case "=":
		return slices.Contains(values, m.value)
	case "=~":
		re, err := regexp.Compile("^(?:" + m.value + ")$")
		if err != nil {
			return false
		}
		return slices.ContainsFunc(values, re.MatchString)
	}
	return true
}

// recordedValues returns, for each recorded series, the values each of its
// labels can take: the rule's static labels, and the values the label takes
// in the series the rule reads (the server's, or recorded ones before it).
// job and instance, which Prometheus adds, are left out.
func recordedValues(t *testing.T, families map[string]*dto.MetricFamily) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	for _, r := range rules(t) {
		if r.Record == "" {
			continue
		}
		if out[r.Record] == nil {
			out[r.Record] = map[string][]string{}
		}
		values := out[r.Record]
		add := func(label string, vs ...string) {
			for _, v := range vs {
				if !slices.Contains(values[label], v) {
					values[label] = append(values[label], v)
				}
			}
		}
		for l, v := range r.Labels {
			add(l, v)
		}
		u, err := parseUsage(r.Expr)
		if err != nil {
			t.Fatal(err)
		}
		for _, label := range levelLabels(r.Record) {
			if slices.Contains(targetLabels, label) {
				continue
			}
			for _, s := range u.selectors {
				if f := families[familyOf(s.name)]; f != nil {
					add(label, labelValues(f)[label]...)
				} else if rv, ok := out[s.name]; ok {
					add(label, rv[label]...)
				}
			}
		}
	}
	return out
}

// handlerRefusals returns the reasons handler/errors.go declares refusals
// for.
func handlerRefusals(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../handler/errors.go")
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, m := range regexp.MustCompile(`&Refusal\{http\.Status\w+, "(\w+)"\}`).FindAllStringSubmatch(string(b), -1) {
		reasons = append(reasons, m[1])
	}
	if len(reasons) < 10 {
		t.Fatalf("found only refusals %q in handler/errors.go", reasons)
	}
	return reasons
}
