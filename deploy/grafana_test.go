package deploy

import (
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// dashboard is the part of Grafana's dashboard JSON model the tests read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string     `json:"name"`
			Type       string     `json:"type"`
			Datasource datasource `json:"datasource"`
			Query      struct {
				Query string `json:"query"`
			} `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Datasource *datasource `json:"datasource"`
		Expr       string      `json:"expr"`
		RefID      string      `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

// datasourceUID is the uid deploy/grafana/provisioning/datasources/prometheus.yml gives Prometheus.
const datasourceUID = "prometheus"

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	data := readRepoFile(t, "deploy", "grafana", "dashboards", "sluice.json")
	if !json.Valid(data) {
		t.Fatal("sluice.json is not valid JSON")
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("sluice.json: %v", err)
	}
	return d
}

func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

type query struct {
	where string // panel or variable, for messages
	expr  string
}

// dashboardQueries returns every PromQL expression of the dashboard: panel
// targets and the queries of template variables (label_values(metric, label)
// is Grafana's, not PromQL: its metric is returned as a selector).
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	d := loadDashboard(t)
	var qs []query
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			qs = append(qs, query{where: fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), expr: tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.Query.Query
		if inner, ok := strings.CutPrefix(q, "label_values("); ok {
			metric, label, ok := strings.Cut(strings.TrimSuffix(inner, ")"), ",")
			if !ok {
				t.Fatalf("variable %s: label_values without a label: %q", v.Name, q)
			}
			q = fmt.Sprintf("count by (%s) (%s)", strings.TrimSpace(label), strings.TrimSpace(metric))
		}
		qs = append(qs, query{where: "variable $" + v.Name, expr: q})
	}
	return qs
}

func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion == 0 {
		t.Errorf("dashboard uid %q, title %q, schemaVersion %d: all are required", d.UID, d.Title, d.SchemaVersion)
	}
	panels := allPanels(d.Panels)
	ids := map[int]string{}
	titles := map[string]bool{}
	types := []string{"row", "timeseries", "stat", "gauge", "table", "bargauge", "text", "heatmap"}
	for _, p := range panels {
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q: id %d is zero or also used by %q", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if !slices.Contains(types, p.Type) {
			t.Errorf("panel %q: type %q", p.Title, p.Type)
		}
		if p.Title == "" {
			t.Errorf("panel %d has no title", p.ID)
		}
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		titles[p.Title] = true
		if len(p.Targets) == 0 && p.Type != "text" {
			t.Errorf("panel %q has no queries", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != datasourceUID {
			t.Errorf("panel %q: datasource %+v; want uid %q", p.Title, p.Datasource, datasourceUID)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != datasourceUID {
				t.Errorf("panel %q target %s: datasource %+v; want uid %q", p.Title, tg.RefID, tg.Datasource, datasourceUID)
			}
			if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target %q with expr %q is empty or repeats its refId", p.Title, tg.RefID, tg.Expr)
			}
			refs[tg.RefID] = true
		}
	}
	// The panels the issue asks for (the batch one waits for a batch metric).
	for _, want := range []string{
		"Requests by route", "Requests by tier", "Latency p50 / p95 / p99 by route", "Latency p50 / p95 / p99 by tier",
		"5xx ratio by route", "Share of lookups per layer", "Decisions by code", "Decisions by tier and code",
		"Redis errors", "Redis latency p99", "ext_proc stream results",
	} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" && v.Datasource.UID != datasourceUID {
			t.Errorf("variable %s: datasource %+v; want uid %q", v.Name, v.Datasource, datasourceUID)
		}
	}
}

// TestGrafanaProvisioning checks the provisioning files against compose: the
// datasource is the prometheus service, the dashboard provider reads where
// compose mounts the dashboards, and the home dashboard exists.
func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name      string         `yaml:"name"`
			UID       string         `yaml:"uid"`
			Type      string         `yaml:"type"`
			Access    string         `yaml:"access"`
			URL       string         `yaml:"url"`
			IsDefault bool           `yaml:"isDefault"`
			Editable  bool           `yaml:"editable"`
			JSONData  map[string]any `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	decodeStrict(t, readRepoFile(t, "deploy", "grafana", "provisioning", "datasources", "prometheus.yml"), &ds, "datasources/prometheus.yml")
	var dp struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name                  string `yaml:"name"`
			Folder                string `yaml:"folder"`
			Type                  string `yaml:"type"`
			DisableDeletion       bool   `yaml:"disableDeletion"`
			AllowUIUpdates        bool   `yaml:"allowUiUpdates"`
			UpdateIntervalSeconds int    `yaml:"updateIntervalSeconds"`
			Options               struct {
				Path                      string `yaml:"path"`
				FoldersFromFilesStructure bool   `yaml:"foldersFromFilesStructure"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	decodeStrict(t, readRepoFile(t, "deploy", "grafana", "provisioning", "dashboards", "sluice.yml"), &dp, "dashboards/sluice.yml")

	c := loadCompose(t)
	g := c.svc(t, "grafana")
	if ds.APIVersion != 1 || dp.APIVersion != 1 {
		t.Errorf("provisioning apiVersion %d, %d; want 1", ds.APIVersion, dp.APIVersion)
	}
	if len(ds.Datasources) != 1 {
		t.Fatalf("%d datasources; want 1", len(ds.Datasources))
	}
	src := ds.Datasources[0]
	if src.UID != datasourceUID || src.Type != "prometheus" {
		t.Errorf("datasource uid %q type %q; the dashboard uses uid %q type prometheus", src.UID, src.Type, datasourceUID)
	}
	u, err := url.Parse(src.URL)
	if err != nil {
		t.Fatal(err)
	}
	prom := c.svc(t, u.Hostname())
	if p, _ := strconv.Atoi(u.Port()); !slices.Contains(prom.containerPorts(), p) || u.Hostname() != "prometheus" {
		t.Errorf("datasource URL %s is not the prometheus service's port (%v)", src.URL, prom.containerPorts())
	}
	if _, err := g.hostPath("/etc/grafana/provisioning/datasources/prometheus.yml"); err != nil {
		t.Errorf("compose does not mount the provisioning directory: %v", err)
	}

	if len(dp.Providers) != 1 {
		t.Fatalf("%d dashboard providers; want 1", len(dp.Providers))
	}
	dir, err := g.hostPath(dp.Providers[0].Options.Path)
	if err != nil {
		t.Fatalf("dashboard provider path %s: %v", dp.Providers[0].Options.Path, err)
	}
	if filepath.Clean(dir) != filepath.Join(root, "deploy", "grafana", "dashboards") {
		t.Errorf("the provider reads %s; want deploy/grafana/dashboards", dir)
	}
	home := g.Environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
	if home != "" {
		hp, err := g.hostPath(home)
		if err != nil {
			t.Errorf("home dashboard %s: %v", home, err)
		} else {
			readRepoFile(t, strings.TrimPrefix(hp, root+string(filepath.Separator)))
		}
	}
	if p, ok := g.port(3000); !ok || p.HostIP != "127.0.0.1" {
		t.Errorf("grafana port 3000 not published on 127.0.0.1")
	}
	// The datasource's timeInterval is the scrape interval, so $__rate_interval covers 4 scrapes.
	var pc promConfig
	decodeStrict(t, readRepoFile(t, "deploy", "prometheus", "prometheus.yml"), &pc, "prometheus.yml")
	if ti, _ := src.JSONData["timeInterval"].(string); ti != pc.Global.ScrapeInterval {
		t.Errorf("datasource timeInterval %q; prometheus scrape_interval is %q", ti, pc.Global.ScrapeInterval)
	}
}
