package deploy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	xt "github.com/sluicehq/sluice/extproc/extproctest"
	"github.com/sluicehq/sluice/internal/app"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/redistest"
)

// exported maps each series name a Prometheus scraping Sluice stores to the
// label names it carries. Histograms appear as their classic _bucket (with
// le), _sum and _count series: deploy/prometheus/prometheus.yml does not
// ingest native histograms, so the bare histogram name has no samples there.
type exported map[string]map[string]bool

// targetLabels are added to every scraped series by Prometheus.
var targetLabels = []string{"job", "instance"}

func (e exported) add(families []*dto.MetricFamily) {
	for _, f := range families {
		labels := map[string]bool{}
		for _, l := range targetLabels {
			labels[l] = true
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		with := func(extra ...string) map[string]bool {
			out := make(map[string]bool, len(labels)+len(extra))
			for l := range labels {
				out[l] = true
			}
			for _, l := range extra {
				out[l] = true
			}
			return out
		}
		name := f.GetName()
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			e.merge(name+"_bucket", with("le"))
			e.merge(name+"_sum", with())
			e.merge(name+"_count", with())
		case dto.MetricType_SUMMARY:
			e.merge(name, with("quantile"))
			e.merge(name+"_sum", with())
			e.merge(name+"_count", with())
		default:
			e.merge(name, with())
		}
	}
}

func (e exported) merge(name string, labels map[string]bool) {
	if e[name] == nil {
		e[name] = map[string]bool{}
	}
	for l := range labels {
		e[name][l] = true
	}
}

// runningApp is an in-process Sluice on loopback ports.
type runningApp struct {
	app  *app.App
	conn *grpc.ClientConn
}

// startApp runs the compose stack's Sluice config in-process, with loopback
// ports, the given Redis and a key prefix of this test; it stops when the test ends.
func startApp(t *testing.T, redisURL string, mutate func(*config.Config)) *runningApp {
	t.Helper()
	cfg, err := config.Load(filepath.Join(root, "deploy", "sluice", "sluice.yaml"), config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Server.GRPCAddr = "127.0.0.1:0"
	cfg.Server.AdminAddr = "127.0.0.1:0"
	cfg.Server.ShutdownGrace = 2 * time.Second
	cfg.Redis.URL = redisURL
	cfg.Redis.KeyPrefix = redistest.Prefix(t)
	cfg.RateLimit.ConfigPath = filepath.Join(root, "config", "ratelimit")
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler), "test", app.Options{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := a.Listen(ctx); err != nil {
		a.Close()
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	conn, err := grpc.NewClient(a.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		cancel()
		<-done
		a.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil && err != context.Canceled {
			t.Errorf("app.Run: %v", err)
		}
		a.Close()
	})
	return &runningApp{app: a, conn: conn}
}

// request plays one HTTP request through ext_proc as Envoy would: request
// headers, response headers, end of stream.
func (r *runningApp) request(t *testing.T, method, path, tenant string, status int) {
	t.Helper()
	s := xt.Open(t, r.conn)
	if _, err := s.Do(xt.RequestHeaders(method, path, true, "x-tenant-id", tenant, "x-user-id", "u1")); err != nil {
		t.Fatalf("ext_proc request headers: %v", err)
	}
	if _, err := s.Do(xt.ResponseHeaders(status, true, "content-type", "application/json")); err != nil {
		t.Fatalf("ext_proc response headers: %v", err)
	}
	if err := s.Finish(); err != nil {
		t.Fatalf("ext_proc stream: %v", err)
	}
}

// decide asks the rate limit service as Envoy's ratelimit filter would, with
// the descriptors envoy.yaml's rate_limits build for a free tenant.
func (r *runningApp) decide(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := func(kv ...string) *commonrl.RateLimitDescriptor {
		var es []*commonrl.RateLimitDescriptor_Entry
		for i := 0; i < len(kv); i += 2 {
			es = append(es, &commonrl.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
		}
		return &commonrl.RateLimitDescriptor{Entries: es}
	}
	_, err := rlsv3.NewRateLimitServiceClient(r.conn).ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{
		Domain:      "sluice",
		Descriptors: []*commonrl.RateLimitDescriptor{d("tier", "free", "tenant_id", "initech"), d("tier", "free", "user_id", "u1")},
	})
	if err != nil {
		t.Fatalf("ShouldRateLimit: %v", err)
	}
}

// scrape reads the app's /metrics as Prometheus does (the text format) and
// adds what it exports to into.
func (r *runningApp) scrape(t *testing.T, into exported) {
	t.Helper()
	resp, err := http.Get("http://" + r.app.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape: parse the text format: %v", err)
	}
	mfs := make([]*dto.MetricFamily, 0, len(byName))
	for _, mf := range byName {
		mfs = append(mfs, mf)
	}
	into.add(mfs)
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// sluiceMetrics builds what a Prometheus scraping Sluice would see: the
// registries of two in-process Sluices running the compose config, one with
// the machine's Redis and one whose Redis is unreachable (so the fail-open
// series exist), after driving requests and rate-limit calls through both.
// Vector metrics only appear once they have a child, hence the traffic.
func sluiceMetrics(t *testing.T) exported {
	t.Helper()
	redistest.Client(t) // fails with a clear message when Redis is not running
	e := exported{}
	slow := func(c *config.Config) {
		// Every request counts as slow, so sluice_http_slow_requests_total has a child.
		c.ExtProc.Metrics.SlowThreshold = time.Nanosecond
	}

	ok := startApp(t, "redis://"+redistest.Addr()+"/0", slow)
	ok.request(t, "GET", "/api/v1/contacts", "initech", 200)
	ok.request(t, "GET", "/api/v1/contacts/1", "acme", 503)
	ok.decide(t)
	ok.scrape(t, e)

	down := startApp(t, "redis://"+closedPort(t)+"/0", slow)
	down.request(t, "GET", "/api/v1/contacts", "globex", 200)
	down.decide(t)
	down.scrape(t, e)

	// The admin endpoint serves the same registry: spot-check the wiring.
	resp, err := http.Get("http://" + ok.app.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "sluice_http_requests_total{") {
		t.Fatalf("/metrics does not serve sluice_http_requests_total:\n%.2000s", body)
	}
	return e
}

// recordingRules maps each recording rule of sluice.rules.yml to the labels
// its result keeps: those of its top-level by (...) clauses.
func recordingRules(t *testing.T, g ruleGroups) exported {
	t.Helper()
	rec := exported{}
	for _, grp := range g.Groups {
		for _, r := range grp.Rules {
			if r.Record == "" {
				continue
			}
			refs, err := parseRefs(r.Expr)
			if err != nil {
				t.Fatalf("record %s: %v", r.Record, err)
			}
			labels := map[string]bool{}
			for _, l := range refs.Grouping {
				if l != "le" {
					labels[l] = true
				}
			}
			rec.merge(r.Record, labels)
		}
	}
	return rec
}

// promqlOnly are series Prometheus makes itself.
var promqlOnly = exported{"up": {"job": true, "instance": true}}

// checkExpr reports every metric expr uses that is neither exported nor
// recorded, every matcher label the metric lacks, and every grouping label
// no metric in expr carries.
func checkExpr(expr string, known ...exported) []string {
	refs, err := parseRefs(expandGrafana(expr))
	if err != nil {
		return []string{fmt.Sprintf("cannot read %q: %v", expr, err)}
	}
	lookup := func(name string) (map[string]bool, bool) {
		for _, k := range known {
			if l, ok := k[name]; ok {
				return l, true
			}
		}
		return nil, false
	}
	var problems []string
	available := map[string]bool{}
	for _, l := range refs.Created {
		available[l] = true
	}
	if len(refs.Selectors) == 0 {
		problems = append(problems, fmt.Sprintf("%q selects no metric", expr))
	}
	for _, s := range refs.Selectors {
		if s.Metric == "" {
			problems = append(problems, fmt.Sprintf("selector without a metric name in %q", expr))
			continue
		}
		labels, ok := lookup(s.Metric)
		if !ok {
			problems = append(problems, fmt.Sprintf("metric %s is not exported by Sluice (nor recorded, nor made by Prometheus)", s.Metric))
			continue
		}
		for l := range labels {
			available[l] = true
		}
		for _, l := range s.Labels {
			if !labels[l] {
				problems = append(problems, fmt.Sprintf("%s has no label %q (it has %v)", s.Metric, l, sortedKeys(labels)))
			}
		}
	}
	for _, l := range refs.Grouping {
		if !available[l] {
			problems = append(problems, fmt.Sprintf("grouping label %q is on no metric of %q", l, expr))
		}
	}
	return problems
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// TestQueriesUseExportedMetrics checks every PromQL expression of the
// dashboard and of the Prometheus rules against the metrics and labels a real
// Sluice registers.
func TestQueriesUseExportedMetrics(t *testing.T) {
	e := sluiceMetrics(t)
	for _, want := range []string{"sluice_http_requests_total", "sluice_http_request_duration_seconds_bucket",
		"sluice_ratelimit_decisions_total", "sluice_ratelimit_degraded_total", "sluice_cache_requests_total",
		"sluice_extproc_streams_total", "go_goroutines"} {
		if _, ok := e[want]; !ok {
			t.Fatalf("the running Sluice does not export %s; exported: %v", want, sortedMapKeys(e))
		}
	}
	groups := loadRules(t)
	rec := recordingRules(t, groups)

	t.Run("rules", func(t *testing.T) {
		n := 0
		for _, grp := range groups.Groups {
			for _, r := range grp.Rules {
				n++
				name := r.Record + r.Alert
				for _, p := range checkExpr(r.Expr, e, rec, promqlOnly) {
					t.Errorf("%s: %s", name, p)
				}
			}
		}
		if n < 10 {
			t.Fatalf("only %d rules read", n)
		}
	})

	t.Run("dashboard", func(t *testing.T) {
		queries := dashboardQueries(t)
		if len(queries) < 20 {
			t.Fatalf("only %d queries found in the dashboard", len(queries))
		}
		for _, q := range queries {
			for _, p := range checkExpr(q.expr, e, rec, promqlOnly) {
				t.Errorf("%s: %s", q.where, p)
			}
		}
	})

	// Every panel group the dashboard promises has a metric behind it (no
	// batch panel: Sluice exports no batch metric yet).
	t.Run("no batch metric", func(t *testing.T) {
		for name := range e {
			if strings.Contains(name, "batch") {
				t.Errorf("Sluice now exports %s: add batch panels to deploy/grafana/dashboards/sluice.json", name)
			}
		}
	})
}

// TestCheckExprFindsProblems proves checkExpr can fail.
func TestCheckExprFindsProblems(t *testing.T) {
	known := exported{
		"sluice_http_requests_total":                  {"route": true, "tier": true, "job": true},
		"sluice_http_request_duration_seconds_bucket": {"route": true, "le": true},
	}
	rec := exported{"sluice:x:ratio": {"domain": true}}
	tests := []struct {
		name string
		expr string
		want string // substring of the first problem; "" for none
	}{
		{name: "ok", expr: `sum by (route) (rate(sluice_http_requests_total{tier="free"}[5m]))`},
		{name: "ok histogram", expr: `histogram_quantile(0.9, sum by (le) (rate(sluice_http_request_duration_seconds_bucket[5m])))`},
		{name: "ok recorded", expr: `sluice:x:ratio{domain="a"} > 0`},
		{name: "unknown metric", expr: `rate(sluice_http_request_total[5m])`, want: "sluice_http_request_total is not exported"},
		{name: "bare histogram", expr: `histogram_quantile(0.9, rate(sluice_http_request_duration_seconds[5m]))`, want: "sluice_http_request_duration_seconds is not exported"},
		{name: "unknown label", expr: `sluice_http_requests_total{status="500"}`, want: `no label "status"`},
		{name: "unknown grouping", expr: `sum by (code) (sluice_http_requests_total)`, want: `grouping label "code"`},
		{name: "no metric", expr: `vector(1)`, want: "selects no metric"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := checkExpr(tt.expr, known, rec)
			if tt.want == "" {
				if len(p) > 0 {
					t.Fatalf("checkExpr(%q) = %v; want no problem", tt.expr, p)
				}
				return
			}
			if len(p) == 0 || !strings.Contains(p[0], tt.want) {
				t.Fatalf("checkExpr(%q) = %v; want a problem mentioning %q", tt.expr, p, tt.want)
			}
		})
	}
}

func sortedMapKeys(e exported) []string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// readRepoFile reads a file relative to the repository.
func readRepoFile(t *testing.T, rel ...string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(append([]string{root}, rel...)...))
	if err != nil {
		t.Fatal(err)
	}
	return data
}
