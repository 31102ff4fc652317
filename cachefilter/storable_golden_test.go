package cachefilter

import (
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/internal/header"
	"go.yaml.in/yaml/v3"
)

// The decisions themselves are tested in httpcache, per RFC section; the
// golden cases here run them together with this package's configuration
// (routes, tag rules) and keys, as the stage does.

// polNow is the clock of the policy and key tests.
var polNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// polHeader builds a header list from name, value pairs (names lower-cased).
func polHeader(kv ...string) header.List {
	h := make(header.List, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		h = append(h, header.Field{Name: strings.ToLower(kv[i]), Value: kv[i+1]})
	}
	return h
}

// polDate is an HTTP-date offset from polNow.
func polDate(offset time.Duration) string { return polNow.Add(offset).UTC().Format(http.TimeFormat) }

// The -update flag rewrites golden files. It is registered only if another
// test file of the package has not registered it already.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files in testdata")
	}
}

func polUpdateGolden() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// TestStorableGolden runs each testdata/storable/*.txt case (an optional
// "config:" line with a YAML flow mapping, "want:" lines, the request line
// and headers, a blank line, the status and the response headers) through
// httpcache.Storable, PrimaryKey, VariantKey and httpcache.Evaluate, checks the decisions its
// "want:" lines name (checkStorableWants), and compares a dump with the
// .golden file beside it. The keys are part of the dump on purpose: a change to key
// derivation orphans every stored entry and must be deliberate.
func TestStorableGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "storable", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".txt")
		t.Run(name, func(t *testing.T) {
			in, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			got := polGoldenRun(t, string(in))
			checkStorableWants(t, string(in), got)
			golden := strings.TrimSuffix(file, ".txt") + ".golden"
			if polUpdateGolden() {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("%s differs (run with -update to accept):\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func polGoldenRun(t *testing.T, in string) string {
	t.Helper()
	var cfg Config
	lines := strings.Split(strings.ReplaceAll(in, "\r\n", "\n"), "\n")
	var body []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "#"), strings.HasPrefix(l, "want:"):
		case strings.HasPrefix(l, "config:"):
			if err := yaml.Unmarshal([]byte(strings.TrimPrefix(l, "config:")), &cfg); err != nil {
				t.Fatalf("config: %v", err)
			}
		default:
			body = append(body, l)
		}
	}
	sections := strings.SplitN(strings.Join(body, "\n"), "\n\n", 2)
	if len(sections) != 2 {
		t.Fatal("want a request, a blank line and a response")
	}
	reqLines := strings.Split(strings.TrimSpace(sections[0]), "\n")
	method, target, _ := strings.Cut(reqLines[0], " ")
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	req := httpcache.Request{Method: method, Scheme: u.Scheme, Authority: u.Host, Path: u.RequestURI(), Tenant: "acme", Time: polNow}
	req.Header = polGoldenHeaders(t, reqLines[1:])
	respLines := strings.Split(strings.TrimSpace(sections[1]), "\n")
	status, err := strconv.Atoi(strings.TrimSpace(respLines[0]))
	if err != nil {
		t.Fatal(err)
	}
	hdr := polGoldenHeaders(t, respLines[1:])

	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	route := cfg.Route(req.Path)
	e, ok, reason := httpcache.Storable(req, status, hdr, polNow, route.Policy)
	var b strings.Builder
	fmt.Fprintf(&b, "route: %s\nstored: %v\n", route.Name, ok)
	if !ok {
		fmt.Fprintf(&b, "reason: %s\n", reason)
		return b.String()
	}
	primary := PrimaryKey(req, route)
	fmt.Fprintf(&b, "primary_key: %s\nvariant_key: %s\n", primary, VariantKey(primary, e.Vary, req.Header))
	fmt.Fprintf(&b, "lifetime: %v\ninitial_age: %v\nstale_while_revalidate: %v\nstale_if_error: %v\n",
		e.Lifetime, e.InitialAge, e.StaleWhileRevalidate, e.StaleIfError)
	fmt.Fprintf(&b, "must_revalidate: %v\nno_cache: %v\nvary: %q\ntags: %q\netag: %q\nlast_modified: %q\n",
		e.MustRevalidate, e.NoCache, e.Vary, e.Tags, e.ETag, e.LastModified)
	fmt.Fprintf(&b, "conditional: %v\nheader:\n", httpcache.ConditionalHeaders(&e))
	for _, h := range e.Header {
		fmt.Fprintf(&b, "  %s: %s\n", h.Name, h.Value)
	}
	for _, at := range []time.Duration{0, e.Lifetime - e.InitialAge + time.Second, e.Lifetime - e.InitialAge + e.StaleWhileRevalidate + time.Second} {
		d := httpcache.Evaluate(httpcache.Request{Method: "GET", Header: req.Header}, &e, polNow.Add(at))
		cs, _ := d.CacheStatus()
		fmt.Fprintf(&b, "evaluate +%v: %v %s %d | %s | x-cache: %s\n", at, d.Action, d.Reason, d.Status, cs, d.XCache())
	}
	return b.String()
}

func polGoldenHeaders(t *testing.T, lines []string) header.List {
	t.Helper()
	var h header.List
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			t.Fatalf("bad header line %q", l)
		}
		h = append(h, header.Field{Name: strings.ToLower(name), Value: strings.TrimPrefix(value, " ")})
	}
	return h
}
