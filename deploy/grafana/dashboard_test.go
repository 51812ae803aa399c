package grafana_test

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"

	"github.com/m-lab/epoxy-extensions/deploy/grafana"
)

// TestCommittedDashboardIsGenerated checks that the file operators import
// is what the generator makes today.
func TestCommittedDashboardIsGenerated(t *testing.T) {
	want, err := grafana.JSON()
	if err != nil {
		t.Fatalf("JSON() error = %v", err)
	}
	got, err := os.ReadFile(grafana.File)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from what the generator makes: run go run ./deploy/grafana/generate", grafana.File)
	}
}

// TestDashboardParses reads the committed file back as a Grafana dashboard
// and checks its panels: distinct ids, a title, and in each time series
// panel Prometheus queries with an expression, reading the data source the
// operator picks at import.
func TestDashboardParses(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	b, err := os.ReadFile(grafana.File)
	if err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 the committed file is the classic schema (see Dashboard).
	var d dashboard.Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s does not parse as a dashboard: %v", grafana.File, err)
	}
	if d.Uid == nil || *d.Uid != grafana.UID {
		t.Errorf("uid = %v, want %q", d.Uid, grafana.UID)
	}
	if d.Templating.List == nil || len(d.Templating.List) != 1 || d.Templating.List[0].Name != "datasource" {
		t.Errorf("templating = %+v, want the one datasource variable", d.Templating)
	}
	ids := map[uint32]bool{}
	queries := 0
	for _, p := range d.Panels {
		switch {
		case p.RowPanel != nil:
			if p.RowPanel.Id == 0 || ids[p.RowPanel.Id] {
				t.Errorf("row %v: id %d missing or taken", p.RowPanel.Title, p.RowPanel.Id)
			}
			ids[p.RowPanel.Id] = true
		case p.Panel != nil:
			panel := p.Panel
			title := ""
			if panel.Title != nil {
				title = *panel.Title
			}
			t.Run(title, func(t *testing.T) {
				if panel.Id == nil || *panel.Id == 0 || ids[*panel.Id] {
					t.Errorf("id %v missing or taken", panel.Id)
				} else {
					ids[*panel.Id] = true
				}
				if title == "" || panel.Type != "timeseries" {
					t.Errorf("type %q, title %q: want a titled timeseries panel", panel.Type, title)
				}
				if len(panel.Targets) == 0 {
					t.Fatal("no queries")
				}
				for _, target := range panel.Targets {
					q, ok := target.(*prometheus.Dataquery)
					if !ok {
						t.Fatalf("query %T, want a Prometheus query", target)
					}
					if q.Expr == "" {
						t.Error("query with no expression")
					}
					if q.Datasource == nil || q.Datasource.Uid == nil || *q.Datasource.Uid != "${datasource}" {
						t.Errorf("query %q does not read the ${datasource} variable", q.Expr)
					}
					queries++
				}
			})
		default:
			t.Errorf("a panel that is neither a row nor a panel: %+v", p)
		}
	}
	if queries == 0 {
		t.Error("no queries in the dashboard")
	}
}
