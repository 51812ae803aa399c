package deploy_test

import (
	"fmt"
	"regexp"
	"strings"
)

// selector is one vector selector of a PromQL expression: a metric name
// and its label matchers.
type selector struct {
	name     string
	matchers []matcher
}

// matcher is one label matcher, such as code=~"5..".
type matcher struct {
	label, op, value string
}

// usage is what an expression reads: its vector selectors, and the label
// names it groups or matches on (by, without, on, ignoring, group_left,
// group_right).
type usage struct {
	selectors []selector
	grouping  []string
}

// The lexemes of the PromQL subset the rules and the dashboard use.
var (
	identRE  = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)
	numberRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?`)
	stringRE = regexp.MustCompile(`^"(\\.|[^"\\])*"`)
	opRE     = regexp.MustCompile(`^(==|!=|>=|<=|=~|!~|[-+*/%^<>=,()])`)
)

// keywords are PromQL words that are neither metric nor function names.
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true,
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true, "inf": true, "nan": true,
}

// aggregations may put their by or without clause before the parenthesis:
// sum by (job) (x).
var aggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "count": true, "group": true,
	"stddev": true, "stdvar": true, "topk": true, "bottomk": true, "quantile": true,
	"count_values": true, "limitk": true, "limit_ratio": true,
}

// grouping keywords are followed by a parenthesised list of label names.
var groupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true,
}

// parseUsage extracts what expr reads. It is a lexer, not a parser: it
// knows identifiers, numbers, strings, operators, range brackets and label
// braces, and fails on anything else, so that nothing it does not
// understand passes unchecked. Whether expr is valid PromQL is promtool's
// job (TestPromtoolCheckRules, TestDashboardQueriesArePromQL).
func parseUsage(expr string) (usage, error) {
	var u usage
	s := expr
	skipSpace := func() { s = strings.TrimLeft(s, " \t\r\n") }
	for {
		skipSpace()
		if s == "" {
			return u, nil
		}
		switch {
		case s[0] == '[': // range or subquery duration
			end := strings.IndexByte(s, ']')
			if end < 0 {
				return u, fmt.Errorf("unclosed [ in %q", expr)
			}
			s = s[end+1:]
		case s[0] == '{': // selector without a name
			ms, rest, err := parseMatchers(s)
			if err != nil {
				return u, fmt.Errorf("%v in %q", err, expr)
			}
			u.selectors = append(u.selectors, selector{matchers: ms})
			s = rest
		case numberRE.MatchString(s):
			s = s[len(numberRE.FindString(s)):]
		case stringRE.MatchString(s):
			s = s[len(stringRE.FindString(s)):]
		case identRE.MatchString(s):
			id := identRE.FindString(s)
			s = s[len(id):]
			skipSpace()
			switch {
			case groupingKeywords[id] && strings.HasPrefix(s, "("):
				end := strings.IndexByte(s, ')')
				if end < 0 {
					return u, fmt.Errorf("unclosed ( after %s in %q", id, expr)
				}
				for _, l := range strings.Split(s[1:end], ",") {
					if l = strings.TrimSpace(l); l != "" {
						u.grouping = append(u.grouping, l)
					}
				}
				s = s[end+1:]
			case keywords[id], aggregations[id]:
			case strings.HasPrefix(s, "("): // function
			default:
				sel := selector{name: id}
				if strings.HasPrefix(s, "{") {
					ms, rest, err := parseMatchers(s)
					if err != nil {
						return u, fmt.Errorf("%v in %q", err, expr)
					}
					sel.matchers, s = ms, rest
				}
				u.selectors = append(u.selectors, sel)
			}
		case opRE.MatchString(s):
			s = s[len(opRE.FindString(s)):]
		default:
			return u, fmt.Errorf("unexpected %.10q in %q", s, expr)
		}
	}
}

// matcherRE is one label matcher inside braces.
var matcherRE = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:\\.|[^"\\])*")\s*,?`)

// parseMatchers reads {label op "value", …} at the start of s and returns
// the matchers and what follows the closing brace.
func parseMatchers(s string) ([]matcher, string, error) {
	s = s[1:]
	var ms []matcher
	for {
		if t := strings.TrimLeft(s, " \t\r\n"); strings.HasPrefix(t, "}") {
			return ms, t[1:], nil
		}
		m := matcherRE.FindStringSubmatch(s)
		if m == nil {
			return nil, "", fmt.Errorf("bad label matcher at %.20q", s)
		}
		value := strings.ReplaceAll(m[3][1:len(m[3])-1], `\\`, `\`)
		ms = append(ms, matcher{label: m[1], op: m[2], value: value})
		s = s[len(m[0]):]
	}
}
