package kubernetes

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the copies kustomize needs and the fragments of envoy/envoy.yaml in the manifests from their single sources")

// copies are files kustomize must find inside its root, each the same bytes
// as its single source elsewhere in the repository.
var copies = []struct{ source, copy string }{
	{"config/ratelimit/tiers.yaml", "deploy/kubernetes/base/config/ratelimit/tiers.yaml"},
	{"deploy/grafana/dashboards/sluice.json", "deploy/kubernetes/base/monitoring/grafana/sluice.json"},
	{"envoy/envoy.yaml", "deploy/kubernetes/components/envoy-config/envoy.yaml"},
}

// TestMain rewrites every generated file first when -update is given, so
// that the tests of the same run check the new versions.
func TestMain(m *testing.M) {
	flag.Parse()
	if *update {
		if err := updateGenerated(); err != nil {
			fmt.Fprintln(os.Stderr, "-update:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// updateGenerated rewrites the copies, the PrometheusRule and the marked
// fragments of envoy.yaml (fragments_test.go) from their sources.
func updateGenerated() error {
	for _, c := range copies {
		src, err := os.ReadFile(filepath.Join(repoRoot, c.source))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(repoRoot, c.copy), src, 0o644); err != nil {
			return err
		}
	}
	rules, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus", "rules", "sluice.rules.yml"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(repoRoot, prometheusRule), prometheusRuleFor(rules), 0o644); err != nil {
		return err
	}
	return updateFragments()
}

func TestCopiesEqualTheirSource(t *testing.T) {
	for _, c := range copies {
		src, err := os.ReadFile(filepath.Join(repoRoot, c.source))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(repoRoot, c.copy))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, src) {
			t.Errorf("%s differs from %s, its source: run `go test -update` in deploy/kubernetes", c.copy, c.source)
		}
	}
}

const prometheusRule = "deploy/kubernetes/base/monitoring/prometheusrule.yaml"

// prometheusRuleFor wraps the groups of a Prometheus rule file in a
// PrometheusRule, indenting them unchanged.
func prometheusRuleFor(rules []byte) []byte {
	s := string(rules)
	i := strings.Index(s, "\ngroups:")
	var b strings.Builder
	b.WriteString("# Generated from deploy/prometheus/rules/sluice.rules.yml (its groups, unchanged); do not edit:\n")
	b.WriteString("# deploy/kubernetes's tests fail when the two differ, and `go test -update` there rewrites this.\n")
	b.WriteString("apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: sluice\nspec:\n")
	for _, l := range strings.SplitAfter(s[i+1:], "\n") {
		if strings.TrimSpace(l) != "" {
			b.WriteString("  ")
		}
		b.WriteString(l)
	}
	return []byte(b.String())
}

// TestPrometheusRuleEqualsRules: the PrometheusRule's groups are the rule
// file's (deploy/prometheus/rules/sluice.rules.yml, which promtool checks and
// unit-tests in deploy/), compared as data.
func TestPrometheusRuleEqualsRules(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "prometheus", "rules", "sluice.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(repoRoot, prometheusRule))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		Groups any `json:"groups"`
	}
	var pr struct {
		Spec struct {
			Groups any `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(src, &want); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(got, &pr); err != nil {
		t.Fatal(err)
	}
	if want.Groups == nil || !reflect.DeepEqual(pr.Spec.Groups, want.Groups) {
		t.Errorf("%s's groups differ from deploy/prometheus/rules/sluice.rules.yml: run `go test -update` in deploy/kubernetes", prometheusRule)
	}
	// The rendered object carries them too.
	for _, o := range ofKind(render(t, "shared"), "PrometheusRule") {
		if !reflect.DeepEqual(o.Map["spec"].(map[string]any)["groups"], want.Groups) {
			t.Errorf("%s: rendered groups differ from the rule file", o)
		}
	}
}

// TestDashboardConfigMap: the rendered dashboard ConfigMap carries the
// dashboard unchanged, with the label Grafana's sidecar loads.
func TestDashboardConfigMap(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana", "dashboards", "sluice.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range overlays(t) {
		o := one(t, render(t, name), "ConfigMap", "sluice-grafana-dashboard")
		cm := decodeAs[*corev1.ConfigMap](t, o)
		if cm.Data["sluice.json"] != string(src) {
			t.Errorf("%s: sluice.json differs from deploy/grafana/dashboards/sluice.json", o)
		}
		if cm.Labels["grafana_dashboard"] != "1" {
			t.Errorf("%s: no grafana_dashboard label", o)
		}
	}
}
