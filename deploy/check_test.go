package deploy_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

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
