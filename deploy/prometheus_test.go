package deploy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/internal/testenv"
)

var promDir = filepath.Join(root, "deploy", "prometheus")

type ruleGroups struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func decodeStrict(t *testing.T, data []byte, v any, what string) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func loadRules(t *testing.T) ruleGroups {
	t.Helper()
	var g ruleGroups
	decodeStrict(t, readRepoFile(t, "deploy", "prometheus", "rules", "sluice.rules.yml"), &g, "sluice.rules.yml")
	return g
}

// promtool returns the promtool binary. Without one the test is skipped
// locally and fails in CI (CI=true), where scripts/services.sh installs it.
func promtool(t *testing.T) string {
	t.Helper()
	return testenv.LookPath(t, "promtool", "scripts/services.sh installs it (from Debian's prometheus package)")
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

func TestPromtool(t *testing.T) {
	t.Run("check config", func(t *testing.T) {
		// Also checks every rule file the config names.
		runPromtool(t, promDir, "check", "config", "prometheus.yml")
	})
	t.Run("check rules", func(t *testing.T) {
		runPromtool(t, filepath.Join(promDir, "rules"), "check", "rules", "sluice.rules.yml")
	})
	t.Run("test rules", func(t *testing.T) {
		runPromtool(t, filepath.Join(promDir, "rules"), "test", "rules", "sluice.rules.test.yml")
	})
	t.Run("dashboard queries parse", func(t *testing.T) {
		// promtool has no bare "parse this query" command: each dashboard query becomes a
		// recording rule of a scratch rule file, which `check rules` parses.
		queries := dashboardQueries(t)
		var b strings.Builder
		b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
		for i, q := range queries {
			expr, err := yaml.Marshal(expandGrafana(q.expr))
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "      # %s\n      - record: dashboard:query_%d\n        expr: %s", strings.ReplaceAll(q.where, "\n", " "), i, indent(string(expr), "          "))
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "dashboard.rules.yml"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		runPromtool(t, dir, "check", "rules", "dashboard.rules.yml")
	})
	t.Run("a broken rule fails", func(t *testing.T) {
		// The same invocation rejects a syntax error, so the checks above mean something.
		dir := t.TempDir()
		bad := "groups:\n  - name: x\n    rules:\n      - record: x:y:z\n        expr: sum(rate(m[5m])\n"
		if err := os.WriteFile(filepath.Join(dir, "bad.yml"), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(promtool(t), "check", "rules", filepath.Join(dir, "bad.yml")).CombinedOutput()
		if err == nil {
			t.Fatalf("promtool accepted a broken rule:\n%s", out)
		}
	})
}

// indent indents every line of a YAML scalar after the first.
func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i := 1; i < len(lines); i++ {
		lines[i] = prefix + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

func TestRules(t *testing.T) {
	g := loadRules(t)
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, "deploy", "prometheus", "rules", "sluice.rules.test.yml"), &tests); err != nil {
		t.Fatal(err)
	}
	firing := map[string]bool{}
	quiet := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	if !slices.Contains(tests.RuleFiles, "sluice.rules.yml") {
		t.Errorf("sluice.rules.test.yml tests %v, not sluice.rules.yml", tests.RuleFiles)
	}
	severities := []string{"page", "ticket"}
	alerts := 0
	for _, grp := range g.Groups {
		for _, r := range grp.Rules {
			switch {
			case r.Alert != "":
				alerts++
				if !slices.Contains(severities, r.Labels["severity"]) {
					t.Errorf("alert %s: severity %q; want one of %v", r.Alert, r.Labels["severity"], severities)
				}
				if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
					t.Errorf("alert %s lacks a summary or description", r.Alert)
				}
				// Each alert is shown firing in a unit test, and shown quiet in another case.
				if !firing[r.Alert] {
					t.Errorf("alert %s never fires in sluice.rules.test.yml", r.Alert)
				}
				if !quiet[r.Alert] {
					t.Errorf("alert %s is never shown quiet in sluice.rules.test.yml", r.Alert)
				}
			case r.Record != "":
				// Recording rule names follow level:metric:operations.
				if parts := strings.Split(r.Record, ":"); len(parts) != 3 || parts[0] != "sluice" {
					t.Errorf("recording rule %s is not sluice:<metric>:<operations>", r.Record)
				}
			}
		}
	}
	if alerts == 0 {
		t.Fatal("no alerts found")
	}
	// The burn-rate pairs of the SRE workbook: 14.4x over 1h and 5m, 6x over 6h and 30m.
	for _, tt := range []struct{ alert, long, short, factor string }{
		{"SluiceErrorBudgetBurnFast", "ratio_rate1h", "ratio_rate5m", "14.4"},
		{"SluiceErrorBudgetBurnSlow", "ratio_rate6h", "ratio_rate30m", "6 "},
		{"SluiceLatencyBudgetBurnFast", "ratio_rate1h", "ratio_rate5m", "14.4"},
		{"SluiceLatencyBudgetBurnSlow", "ratio_rate6h", "ratio_rate30m", "6 "},
		{"SluiceRateLimitFailOpenBurnFast", "ratio_rate1h", "ratio_rate5m", "14.4"},
		{"SluiceRateLimitFailOpenBurnSlow", "ratio_rate6h", "ratio_rate30m", "6 "},
	} {
		expr := ""
		for _, grp := range g.Groups {
			for _, r := range grp.Rules {
				if r.Alert == tt.alert {
					expr = r.Expr
				}
			}
		}
		if !strings.Contains(expr, ":"+tt.long+" >") || !strings.Contains(expr, ":"+tt.short+" >") || strings.Count(expr, "("+tt.factor) != 2 {
			t.Errorf("%s = %q; want the %s and %s windows both over %sx the budget", tt.alert, expr, tt.long, tt.short, strings.TrimSpace(tt.factor))
		}
	}
}

type promConfig struct {
	Global struct {
		ScrapeInterval     string `yaml:"scrape_interval"`
		ScrapeTimeout      string `yaml:"scrape_timeout"`
		EvaluationInterval string `yaml:"evaluation_interval"`
	} `yaml:"global"`
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// TestPrometheusConfig checks what promtool cannot: that the scrape targets
// are the compose services on the ports they serve metrics on, and that the
// compose service runs this file with these rules.
func TestPrometheusConfig(t *testing.T) {
	var pc promConfig
	decodeStrict(t, readRepoFile(t, "deploy", "prometheus", "prometheus.yml"), &pc, "prometheus.yml")
	c := loadCompose(t)
	cfg, _ := sluiceConfig(t, c)
	b, err := envoy.LoadBootstrap(envoyConfig(t, c))
	if err != nil {
		t.Fatal(err)
	}
	ls, err := envoy.ParseListeners(envoyConfig(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if a := b.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" {
		t.Errorf("envoy's admin interface listens on %q: Prometheus must scrape the stats listener, the admin stays on loopback", a)
	}
	envoyStats := port(t, envoy.Find(ls, envoy.StatsListener).Address)

	ps := c.svc(t, "prometheus")
	var configFile string
	for _, a := range ps.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			configFile = v
		}
	}
	host, err := ps.hostPath(configFile)
	if err != nil {
		t.Fatalf("prometheus --config.file=%s: %v", configFile, err)
	}
	if filepath.Clean(host) != filepath.Join(promDir, "prometheus.yml") {
		t.Errorf("compose runs prometheus with %s; want deploy/prometheus/prometheus.yml", host)
	}
	webPort := 9090
	if p, ok := ps.port(webPort); !ok || p.HostIP != "127.0.0.1" {
		t.Errorf("prometheus port %d not published on 127.0.0.1", webPort)
	}

	for _, rf := range pc.RuleFiles {
		matches, err := filepath.Glob(filepath.Join(promDir, rf))
		if err != nil || len(matches) == 0 {
			t.Errorf("rule_files %q matches nothing under deploy/prometheus", rf)
		}
		for _, m := range matches {
			if strings.Contains(filepath.Base(m), ".test.") {
				t.Errorf("rule_files %q loads the unit test file %s as rules", rf, m)
			}
		}
	}

	want := map[string]struct {
		target, path string
	}{
		"sluice":        {target: net.JoinHostPort("sluice", strconv.Itoa(port(t, cfg.Server.AdminAddr))), path: "/metrics"},
		"sluice-worker": {target: net.JoinHostPort("worker", strconv.Itoa(port(t, parseWorkerCommand(t, c.svc(t, "worker")).adminAddr))), path: "/metrics"},
		"envoy":         {target: net.JoinHostPort("envoy", strconv.Itoa(envoyStats)), path: "/stats/prometheus"},
		"prometheus":    {target: net.JoinHostPort("localhost", strconv.Itoa(webPort)), path: ""},
	}
	seen := map[string]bool{}
	for _, sc := range pc.ScrapeConfigs {
		w, ok := want[sc.JobName]
		if !ok {
			t.Errorf("unexpected scrape job %q", sc.JobName)
			continue
		}
		seen[sc.JobName] = true
		if sc.MetricsPath != w.path && !(w.path == "" && sc.MetricsPath == "/metrics") {
			t.Errorf("job %s scrapes %q; want %q", sc.JobName, sc.MetricsPath, w.path)
		}
		var targets []string
		for _, s := range sc.StaticConfigs {
			targets = append(targets, s.Targets...)
		}
		if !slices.Equal(targets, []string{w.target}) {
			t.Errorf("job %s targets %v; want [%s]", sc.JobName, targets, w.target)
		}
		host, p, _ := net.SplitHostPort(w.target)
		if host != "localhost" {
			s := c.svc(t, host)
			n, _ := strconv.Atoi(p)
			if !slices.Contains(s.containerPorts(), n) {
				t.Errorf("job %s scrapes %s, but service %s declares ports %v", sc.JobName, w.target, host, s.containerPorts())
			}
		}
	}
	for job := range want {
		if !seen[job] {
			t.Errorf("no scrape job %q", job)
		}
	}
}
