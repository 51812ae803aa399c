// Package deploy holds no Go code that ships: it is the home of the
// operations kit (Kubernetes manifest, Prometheus rules and alerts, Grafana
// dashboard, systemd unit) and of the tests that keep it honest. They run
// promtool's own checks and unit tests on the rules, check that every alert
// has its runbook section, and scrape a running server to check that every
// rule and dashboard expression names only metrics and labels the server
// exposes.
//
// promtool comes from e2e/components (built once from the Go module proxy
// and cached); with -short the tests that need it skip, otherwise a missing
// promtool is a failure.
package deploy
