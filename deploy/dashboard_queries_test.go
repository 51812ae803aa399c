package deploy_test

import "testing"

// dashboardQuery is the PromQL of one panel target of the dashboard.
type dashboardQuery struct{ panel, expr string }

// dashboardQueries returns the queries of deploy/grafana's dashboard.
func dashboardQueries(t *testing.T) []dashboardQuery {
	t.Helper()
	return nil
}
