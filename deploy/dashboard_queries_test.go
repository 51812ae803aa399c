package deploy_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dashboardQuery is the PromQL of one panel target of the dashboard.
type dashboardQuery struct{ panel, expr string }

// dashboardQueries returns the queries of the committed dashboard in
// deploy/grafana, read as plain JSON: what operators import.
func dashboardQueries(t *testing.T) []dashboardQuery {
	t.Helper()
	b, err := os.ReadFile("grafana/epoxy-extension-server.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr  string `json:"expr"`
				RefID string `json:"refId"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	var out []dashboardQuery
	for _, p := range d.Panels {
		for _, q := range p.Targets {
			out = append(out, dashboardQuery{p.Title + "/" + q.RefID, q.Expr})
		}
	}
	if len(out) == 0 {
		t.Fatal("no queries in the dashboard")
	}
	return out
}

// TestDashboardQueriesArePromQL has promtool check every panel query, as
// the expressions of a throwaway rule file.
func TestDashboardQueriesArePromQL(t *testing.T) {
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, q := range dashboardQueries(t) {
		expr, err := json.Marshal(q.expr) // a JSON string is a YAML string
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&rules, "      # %s\n      - record: dashboard_query_%d\n        expr: %s\n", q.panel, i, expr)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yml"), []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, dir, "check", "rules", "dashboard.yml")
}
