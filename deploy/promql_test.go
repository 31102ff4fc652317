package deploy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// This file reads PromQL just far enough to say which metrics and labels an
// expression uses. Syntax is promtool's job (prometheus_test.go runs it on the
// rules and on every dashboard query); this only has to find names, so it
// avoids a dependency on the Prometheus server module for a parser.

// selector is one vector selector: a metric name and the labels its matchers name.
type selector struct {
	Metric string
	Labels []string
}

// promqlRefs is what an expression refers to.
type promqlRefs struct {
	Selectors []selector
	// Grouping are the labels of by/without/on/ignoring/group_left/group_right clauses.
	Grouping []string
	// Created are labels label_replace or label_join write (their second argument).
	Created []string
}

var aggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true, "start": true, "end": true,
}

var groupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// grafanaVar matches Grafana's template variables outside strings
// ($__rate_interval, $var, ${var}, ${var:format}, [[var]]).
var grafanaVar = regexp.MustCompile(`\$__\w+|\$\{[^}]+\}|\$\w+|\[\[\w+\]\]`)

// expandGrafana replaces Grafana's interval variables with a duration, so the
// expression parses as PromQL. Variables inside strings stay as they are.
func expandGrafana(expr string) string {
	var b strings.Builder
	inString := byte(0)
	for i := 0; i < len(expr); i++ {
		ch := expr[i]
		if inString != 0 {
			b.WriteByte(ch)
			if ch == '\\' && i+1 < len(expr) {
				i++
				b.WriteByte(expr[i])
			} else if ch == inString {
				inString = 0
			}
			continue
		}
		if ch == '"' || ch == '\'' || ch == '`' {
			inString = ch
			b.WriteByte(ch)
			continue
		}
		if loc := grafanaVar.FindStringIndex(expr[i:]); loc != nil && loc[0] == 0 {
			b.WriteString("5m")
			i += loc[1] - 1
			continue
		}
		b.WriteByte(ch)
	}
	return b.String()
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

// parseRefs scans expr (after expandGrafana) for metric names and labels.
func parseRefs(expr string) (promqlRefs, error) {
	var (
		r          promqlRefs
		braceDepth int
		cur        = -1 // index into r.Selectors of the open {...}, or -1
		// calls holds, per open parenthesis, the function called with it ("" for grouping) and
		// the argument index, to catch label_replace's destination label.
		calls []struct {
			fn  string
			arg int
		}
		pendingFn       string // identifier just before a '('
		groupingPending bool   // a grouping keyword waits for its '('
		inGrouping      bool   // inside a grouping list
	)
	s := expr
	skipSpace := func(i int) int {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
			i++
		}
		return i
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			q := c
			j := i + 1
			for j < len(s) && s[j] != q {
				if s[j] == '\\' && q != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return r, fmt.Errorf("unterminated string at %d", i)
			}
			if n := len(calls); n > 0 && (calls[n-1].fn == "label_replace" || calls[n-1].fn == "label_join") && calls[n-1].arg == 1 {
				r.Created = append(r.Created, s[i+1:j])
			}
			i = j + 1
		case c >= '0' && c <= '9' || (c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9'):
			for i < len(s) && (isIdentChar(s[i]) || s[i] == '.') {
				if (s[i] == 'e' || s[i] == 'E') && i+1 < len(s) && (s[i+1] == '+' || s[i+1] == '-') {
					i++
				}
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			word := s[i:j]
			next := skipSpace(j)
			i = j
			switch {
			case braceDepth > 0:
				r.Selectors[cur].Labels = append(r.Selectors[cur].Labels, word)
			case inGrouping:
				r.Grouping = append(r.Grouping, word)
			case groupingKeywords[word]:
				if next < len(s) && s[next] == '(' {
					groupingPending = true
				}
			case keywords[strings.ToLower(word)]:
			case aggregations[word]:
				pendingFn = word
			case next < len(s) && s[next] == '(':
				pendingFn = word
			default:
				r.Selectors = append(r.Selectors, selector{Metric: word})
				if next < len(s) && s[next] == '{' {
					cur = len(r.Selectors) - 1
					braceDepth++
					i = next + 1
				}
			}
		case c == '{':
			// A selector without a metric name ({__name__=~"..."}).
			r.Selectors = append(r.Selectors, selector{})
			cur = len(r.Selectors) - 1
			braceDepth++
			i++
		case c == '}':
			if braceDepth == 0 {
				return r, fmt.Errorf("unbalanced } at %d", i)
			}
			braceDepth--
			i++
		case c == '(':
			if groupingPending {
				inGrouping, groupingPending = true, false
				calls = append(calls, struct {
					fn  string
					arg int
				}{fn: "", arg: 0})
			} else {
				calls = append(calls, struct {
					fn  string
					arg int
				}{fn: pendingFn, arg: 0})
			}
			pendingFn = ""
			i++
		case c == ')':
			if len(calls) == 0 {
				return r, fmt.Errorf("unbalanced ) at %d", i)
			}
			calls = calls[:len(calls)-1]
			inGrouping = false
			i++
		case c == ',':
			if braceDepth == 0 && len(calls) > 0 {
				calls[len(calls)-1].arg++
			}
			i++
		case c == '[':
			// A range or subquery: [5m], [1h:1m].
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return r, fmt.Errorf("unterminated [ at %d", i)
			}
			i += j + 1
		default:
			i++ // operators, =~, !=, ...
		}
	}
	if braceDepth != 0 || len(calls) != 0 {
		return r, fmt.Errorf("unbalanced braces or parentheses")
	}
	return r, nil
}

func TestParseRefs(t *testing.T) {
	tests := []struct {
		name      string
		expr      string
		metrics   []string
		labels    map[string][]string // metric → matcher labels
		grouping  []string
		created   []string
		wantError bool
	}{
		{
			name:    "plain rate",
			expr:    `rate(sluice_http_requests_total[5m])`,
			metrics: []string{"sluice_http_requests_total"},
		},
		{
			name:     "aggregation with grouping before and matchers",
			expr:     `sum by (route, tier) (rate(sluice_http_requests_total{status_class="5xx",route=~"$route"}[$__rate_interval]))`,
			metrics:  []string{"sluice_http_requests_total"},
			labels:   map[string][]string{"sluice_http_requests_total": {"status_class", "route"}},
			grouping: []string{"route", "tier"},
		},
		{
			name:     "grouping after, histogram_quantile",
			expr:     `histogram_quantile(0.99, sum(rate(x_bucket{le!="+Inf"}[5m])) by (le))`,
			metrics:  []string{"x_bucket"},
			labels:   map[string][]string{"x_bucket": {"le"}},
			grouping: []string{"le"},
		},
		{
			name:     "binary operators, vector matching, recording rules, offset, numbers",
			expr:     "a:b:c > (14.4 * 0.001) and on (domain) group_left (tier) d offset 30m < 1e-3 # comment metric_in_comment",
			metrics:  []string{"a:b:c", "d"},
			grouping: []string{"domain", "tier"},
		},
		{
			name:     "label_replace creates a label",
			expr:     `sum by (tier) (label_replace(rate(m{rule!="x,y"}[5m]), "tier", "$1", "rule", "([a-z]+)_.*"))`,
			metrics:  []string{"m"},
			labels:   map[string][]string{"m": {"rule"}},
			grouping: []string{"tier"},
			created:  []string{"tier"},
		},
		{
			name:    "or vector(0), time(), functions are not metrics",
			expr:    `(sum(rate(m[5m])) or vector(0)) / time() - max(g)`,
			metrics: []string{"m", "g"},
		},
		{name: "unbalanced", expr: `sum(rate(m[5m])`, wantError: true},
		{name: "unterminated string", expr: `m{a="b}`, wantError: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := parseRefs(expandGrafana(tt.expr))
			if tt.wantError {
				if err == nil {
					t.Fatalf("parseRefs(%q) = %+v; want an error", tt.expr, r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var metrics []string
			for _, s := range r.Selectors {
				metrics = append(metrics, s.Metric)
				if want, ok := tt.labels[s.Metric]; ok && !slices.Equal(s.Labels, want) {
					t.Errorf("labels of %s = %v; want %v", s.Metric, s.Labels, want)
				}
			}
			if !slices.Equal(metrics, tt.metrics) {
				t.Errorf("metrics = %v; want %v", metrics, tt.metrics)
			}
			if !slices.Equal(r.Grouping, tt.grouping) {
				t.Errorf("grouping = %v; want %v", r.Grouping, tt.grouping)
			}
			if !slices.Equal(r.Created, tt.created) {
				t.Errorf("created = %v; want %v", r.Created, tt.created)
			}
		})
	}
}
