package deploy_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []rule `json:"rules"`
	} `json:"groups"`
}

// rule is a recording rule (Record set) or an alert (Alert set).
type rule struct {
	Record      string            `json:"record"`
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// testFile is a promtool unit test file.
type testFile struct {
	Tests []struct {
		Name          string `json:"name"`
		AlertRuleTest []struct {
			Alertname string `json:"alertname"`
			ExpAlerts []any  `json:"exp_alerts"`
		} `json:"alert_rule_test"`
		PromQLExpTest []struct {
			Expr       string `json:"expr"`
			ExpSamples []any  `json:"exp_samples"`
		} `json:"promql_expr_test"`
	} `json:"tests"`
}

// readYAML decodes the YAML file path into v; with strict, a field v does
// not know is an error.
func readYAML(t *testing.T, path string, v any, strict bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	unmarshal := yaml.Unmarshal
	if strict {
		unmarshal = yaml.UnmarshalStrict
	}
	if err := unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// rules returns every rule of the files in deploy/prometheus.
func rules(t *testing.T) []rule {
	t.Helper()
	var all []rule
	for _, path := range []string{"prometheus/rules.yml", "prometheus/alerts.yml"} {
		var f ruleFile
		readYAML(t, path, &f, true)
		for _, g := range f.Groups {
			all = append(all, g.Rules...)
		}
	}
	if len(all) == 0 {
		t.Fatal("no rules")
	}
	return all
}

// runbookURL is where every alert's runbook_url points, up to the anchor.
const runbookURL = "https://github.com/m-lab/epoxy-extensions/blob/main/docs/runbook.md#"

// anchors returns the GitHub anchors of docs/runbook.md's headings.
func anchors(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../docs/runbook.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, line := range strings.Split(string(b), "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			out = append(out, strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(h), ""), " ", "-"))
		}
	}
	return out
}

// TestAlertsDocumented checks that every alert has a summary, a description,
// a severity M-Lab uses, and a runbook_url pointing to a section of
// docs/runbook.md; and that the runbook has no section for an alert that
// does not exist.
func TestAlertsDocumented(t *testing.T) {
	sections := anchors(t)
	var alerts []string
	for _, r := range rules(t) {
		if r.Alert == "" {
			continue
		}
		alerts = append(alerts, strings.ToLower(r.Alert))
		t.Run(r.Alert, func(t *testing.T) {
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("no %s annotation", a)
				}
			}
			if s := r.Labels["severity"]; s != "ticket" && s != "page" {
				t.Errorf("severity %q, want ticket or page", s)
			}
			if r.For == "" {
				t.Errorf("no for: an alert that fires on one evaluation flaps")
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookURL)
			if !ok {
				t.Fatalf("runbook_url %q does not start with %q", r.Annotations["runbook_url"], runbookURL)
			}
			if anchor != strings.ToLower(r.Alert) || !slices.Contains(sections, anchor) {
				t.Errorf("runbook_url anchor %q: want %q, a section of docs/runbook.md (sections: %q)", anchor, strings.ToLower(r.Alert), sections)
			}
		})
	}
	for _, s := range sections {
		if !slices.Contains(alerts, s) {
			t.Errorf("docs/runbook.md has a section %q for no alert", s)
		}
	}
}

// TestAlertsAndRecordingRulesTested checks that the promtool unit tests
// exercise every alert with a case where it fires and one where it must
// not, and every recording rule with at least one expected sample.
func TestAlertsAndRecordingRulesTested(t *testing.T) {
	fires, silent, recorded := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, path := range []string{"prometheus/rules_test.yml", "prometheus/alerts_test.yml"} {
		var f testFile
		readYAML(t, path, &f, false)
		for _, tc := range f.Tests {
			for _, a := range tc.AlertRuleTest {
				if len(a.ExpAlerts) > 0 {
					fires[a.Alertname] = true
				} else {
					silent[a.Alertname] = true
				}
			}
			for _, e := range tc.PromQLExpTest {
				if len(e.ExpSamples) > 0 {
					for _, name := range recordedName.FindAllString(e.Expr, -1) {
						recorded[name] = true
					}
				}
			}
		}
	}
	for _, r := range rules(t) {
		switch {
		case r.Alert != "":
			if !fires[r.Alert] {
				t.Errorf("alert %s: no promtool test where it fires", r.Alert)
			}
			if !silent[r.Alert] {
				t.Errorf("alert %s: no promtool test where it must not fire", r.Alert)
			}
		case !recorded[r.Record]:
			t.Errorf("recording rule %s: no promtool test with an expected sample", r.Record)
		}
	}
}

// recordedName matches the names of recorded series (level:metric:ops).
var recordedName = regexp.MustCompile(`[a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]+`)
