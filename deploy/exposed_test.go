package deploy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
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
	"github.com/m-lab/epoxy-extensions/hostname"
	"github.com/m-lab/epoxy-extensions/identity"
	"github.com/m-lab/epoxy-extensions/node"
	"github.com/m-lab/epoxy-extensions/token"
)

// Hosts whose requests the fakes below fail, each in its own way.
const (
	hostOK       = "mlab1-lga01.mlab-sandbox.measurement-lab.org"
	hostFail     = "mlab2-lga01.mlab-sandbox.measurement-lab.org"
	hostBusy     = "mlab3-lga01.mlab-sandbox.measurement-lab.org"
	hostNoDNS    = "mlab4-lga01.mlab-sandbox.measurement-lab.org"
	hostLimited  = "mlab1-abc01.mlab-sandbox.measurement-lab.org"
	hostControl  = "mlab1-cpl01.mlab-sandbox.measurement-lab.org"
	hostNotOwn   = "mlab1-not01.mlab-sandbox.measurement-lab.org"
	hostNoID     = "mlab1-idm01.mlab-sandbox.measurement-lab.org"
	hostBadID    = "mlab1-idi01.mlab-sandbox.measurement-lab.org"
	hostKeysDown = "mlab1-idu01.mlab-sandbox.measurement-lab.org"
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
	if host == hostLimited {
		return token.Join{}, &token.LimitError{Host: host, Max: 1, RetryAt: time.Now().Add(time.Minute)}
	}
	return token.Join{APIAddress: "192.0.2.1:6443", Token: "abcdef.0123456789abcdef",
		CAHash: "sha256:" + strings.Repeat("0", 64)}, f.err(host)
}

func (f fakeBackend) Delete(_ context.Context, host string, owner netip.Addr) error {
	if host == hostControl {
		return fmt.Errorf("node %s: %w", host, node.ErrControlPlane)
	}
	if host == hostNotOwn && owner.IsValid() {
		return fmt.Errorf("node %s: %w", host, node.ErrNotOwnNode)
	}
	return f.err(host)
}

func (f fakeBackend) Put(_ context.Context, bmc hostname.BMC, _ string) error {
	if strings.HasPrefix(bmc.Hostname, "mlab4d-") {
		return fmt.Errorf("%w %s: no such host", hostname.ErrResolve, bmc.Hostname)
	}
	if strings.HasPrefix(bmc.Hostname, "mlab2d-") {
		return errors.New(errBackendUp)
	}
	return nil
}

// fakeIdentity refuses the identity of the hosts named for it, each for
// its own reason.
type fakeIdentity struct{}

func (fakeIdentity) Verify(_ context.Context, _, host string) error {
	reason := map[string]string{hostNoID: identity.ReasonMissing, hostBadID: identity.ReasonInvalid, hostKeysDown: identity.ReasonUnavailable}[host]
	if reason == "" {
		return nil
	}
	return &identity.Error{Reason: reason, Detail: "fake"}
}

// newMux returns the server's routes over fakes of the given Kubernetes
// backend names, allowing only sources and, when proxies is set, trusting
// only those.
func newMux(t *testing.T, tokens, nodes string, sources string, proxies ...string) http.Handler {
	t.Helper()
	allowed, err := handler.ParseSources(sources)
	if err != nil {
		t.Fatal(err)
	}
	var trusted handler.Sources
	if len(proxies) > 0 {
		if trusted, err = handler.ParseSources(proxies[0]); err != nil {
			t.Fatal(err)
		}
	}
	s := &handler.Server{
		Tokens:         fakeBackend{tokens},
		Nodes:          fakeBackend{nodes},
		Creds:          fakeBackend{"datastore"},
		Validator:      handler.Validator{MaxBootAge: 2 * time.Hour, MaxClockSkew: 5 * time.Minute, Sources: allowed, TrustedProxies: trusted},
		Identity:       fakeIdentity{},
		BackendTimeout: 3 * time.Minute,
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
	execSrv := httptest.NewServer(newMux(t, "kubectl", "kubectl", ""))
	defer execSrv.Close()
	apiSrv := httptest.NewServer(newMux(t, "kube_api", "kube_api", ""))
	defer apiSrv.Close()
	strangerSrv := httptest.NewServer(newMux(t, "kubectl", "kubectl", "192.0.2.0/24"))
	defer strangerSrv.Close()
	// A server that trusts another proxy: loopback callers are direct.
	directSrv := httptest.NewServer(newMux(t, "kube_api", "kube_api", "", "192.0.2.0/24"))
	defer directSrv.Close()

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
		{"token limit", execSrv, "POST", "/v2/allocate_k8s_token", body(hostLimited, time.Minute, ""), 429},
		{"busy token", execSrv, "POST", "/v2/allocate_k8s_token", body(hostBusy, time.Minute, ""), 503},
		{"not trusted", directSrv, "POST", "/v1/bmc_store_password", body(hostOK, time.Minute, pw), 403},
		{"not own node", directSrv, "POST", "/v1/node/delete", body(hostNotOwn, time.Minute, ""), 403},
		{"identity missing", directSrv, "POST", "/v2/allocate_k8s_token", body(hostNoID, time.Minute, ""), 401},
		{"identity invalid", directSrv, "POST", "/v1/allocate_k8s_token", body(hostBadID, time.Minute, ""), 401},
		{"identity unavailable", directSrv, "POST", "/v2/allocate_k8s_token", body(hostKeysDown, time.Minute, ""), 503},
		{"direct with an identity", directSrv, "POST", "/v2/allocate_k8s_token", body(hostOK, time.Minute, ""), 200},
		{"control-plane node", apiSrv, "POST", "/v1/node/delete", body(hostControl, time.Minute, ""), 403},
		{"busy node", execSrv, "POST", "/v1/node/delete", body(hostBusy, time.Minute, ""), 503},
		{"kubectl fails", execSrv, "POST", "/v2/allocate_k8s_token", body(hostFail, time.Minute, ""), 500},
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
