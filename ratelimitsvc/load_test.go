package ratelimitsvc

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the .golden files under testdata/")

// golden compares got with the named golden file, or rewrites it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// errorCases names, for each case under testdata/errors, the problems that
// matter: the line (0: none) and the words that name the mistake, in order.
// The .golden files pin the exact wording; these pin the decision, so that
// -update cannot quietly accept a file that starts to load, a problem that
// disappears, or one that moves to another line.
var errorCases = map[string][]string{
	"alias_bomb":            {"7: aliases expand the file"},
	"alias_cycle":           {"4: nested deeper than 32 levels"},
	"comments_only":         {"0: file is empty"},
	"composite_collision":   {`7: descriptor "a_b" collides with line 5`},
	"deep_nesting":          {"66: nested deeper than 32 levels"},
	"duplicate_descriptor":  {`6: duplicate descriptor "a_x"`, `10: duplicate descriptor "b"`, `15: duplicate descriptor "c_1"`},
	"duplicate_domain":      {`3: duplicate domain "shared"`},
	"duplicate_mapping_key": {`4: duplicate key "key"`, `5: duplicate key "unit"`, `6: duplicate key "domain"`},
	"empty_dir":             {"0: no *.yaml or *.yml rules files"},
	"empty_domain":          {"2: domain is missing"},
	"empty_file":            {"0: file is empty"},
	"empty_key":             {"3: empty key", "5: empty key", "6: empty key"},
	"extensions": {`2: algorithm "leaky_bucket"`, `5: unit_multiplier must be a whole number`, `7: unit_multiplier 11 makes a window longer`,
		`10: sub_windows must be a whole number`, `11: sub_windows must be a whole number`, `13: sub_windows applies only to the sliding_window`,
		`15: algorithm "token_bucket"`, `19: two limits of descriptor "same_names" are named "a"`},
	"invalid_yaml":   {"4: invalid YAML: did not find expected '-' indicator"},
	"merge_cycle":    {"3: nests merge keys deeper than 32 levels"},
	"metadata":       {"4: metadata must be a mapping", "6: metadata numbers must be finite"},
	"multi_document": {"0: more than one YAML document"},
	"non_map_list":   {`3: must be a mapping, not "a"`, `4: must be a mapping, not "b"`, "5: must be a mapping, not empty"},
	"non_string_key": {`1: unknown key "7.5"`, "1: domain is missing", "2: a key that is a list"},
	"not_mapping":    {"1: the top level must be a mapping"},
	"not_utf8":       {"3: not valid UTF-8"},
	"numbers": {`4: requests_per_unit must be a whole number`, `6: requests_per_unit must be a whole number`, `8: requests_per_unit must be a whole number`,
		`10: requests_per_unit must be a whole number`, `12: requests_per_unit must be a whole number`, `14: requests_per_unit must be a whole number`,
		`16: requests_per_unit must be a whole number`},
	"replaces": {`5: limit "me" replaces its own name`, "13: replaces entry has no name", `16: replaces "nobody", but no limit`,
		`23: a replaces entry must be a mapping`, `27: replaces "burst", a limit of the same descriptor`},
	"share_threshold": {"3: share_threshold needs a wildcard value", "7: share_threshold needs a wildcard value"},
	"types": {"1: domain must be a string", "2: failure_mode_deny must be true or false", "4: key must be a string",
		"6: shadow_mode must be true or false", "7: detailed_metric must be true or false", "8: a rate limit must be a mapping",
		"10: descriptors must be a list", "12: rate_limits must be a list", "14: a rate limit must be a mapping"},
	"units": {`4: invalid rate limit unit "fortnight"`, `6: invalid rate limit unit "unknown"`, "8: rate limit has no unit",
		"10: rate limit has no unit", "12: rate limit has no requests_per_unit", "14: unit must be a string"},
	"unknown_keys": {`2: unknown key "domian"`, `5: unknown key "ratelimit"`, `11: unknown key "requests_per_units"`,
		`13: unknown key "replaces_typo"`, `15: key "unit" belongs in a rate limit`, `19: key "shadow_mode" belongs in a descriptor`,
		`27: unknown key "nmae"`, `31: key "algorithm" belongs in the top level or a rate limit`},
	"unlimited": {"4: unit cannot be set on an unlimited", "6: requests_per_unit cannot be set on an unlimited",
		"8: unit_multiplier cannot be set", "8: algorithm cannot be set", "8: sub_windows cannot be set",
		`10: unlimited cannot be combined with other limits`, "16: rate limit has no unit", "16: rate limit has no requests_per_unit"},
}

// TestLoadRulesErrors loads each file or directory under testdata/errors,
// checks its problems against errorCases and compares the error with its
// .golden file.
func TestLoadRulesErrors(t *testing.T) {
	entries, err := os.ReadDir("testdata/errors")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".golden") {
			continue
		}
		base := strings.TrimSuffix(strings.TrimSuffix(name, ".yaml"), ".yml")
		seen[base] = true
		t.Run(base, func(t *testing.T) {
			path := filepath.Join("testdata/errors", name)
			start := time.Now()
			r, err := LoadRules(path)
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("LoadRules took %v", elapsed)
			}
			if err == nil {
				t.Fatalf("LoadRules(%s) succeeded with domains %v", path, r.Domains())
			}
			var ce *ConfigError
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("error %T %v is not a *ConfigError with problems", err, err)
			}
			want, ok := errorCases[base]
			if !ok {
				t.Fatalf("no entry in errorCases: name the problems this case must report")
			}
			checkProblems(t, ce.Problems, want)
			golden(t, filepath.Join("testdata/errors", base+".golden"), []byte(err.Error()+"\n"))
		})
	}
	for name := range errorCases {
		if !seen[name] {
			t.Errorf("errorCases has %q, which is not under testdata/errors", name)
		}
	}
}

// checkProblems compares problems with "line: words" expectations, in order.
func checkProblems(t *testing.T, got []Problem, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d problems, want %d:\n%v\nwant %q", len(got), len(want), got, want)
		return
	}
	for i, w := range want {
		lineStr, words, _ := strings.Cut(w, ": ")
		line, err := strconv.Atoi(lineStr)
		if err != nil {
			t.Fatalf("bad expectation %q", w)
		}
		if got[i].Line != line || !strings.Contains(got[i].Msg, words) {
			t.Errorf("problem %d = line %d %q, want line %d with %q", i, got[i].Line, got[i].Msg, line, words)
		}
	}
}

// okCases holds, for each case under testdata/ok, the explicit checks of
// what its rules decide. The .golden file pins the effective rules as JSON;
// a case without checks here fails, so that -update cannot quietly accept a
// change of which limit a request gets.
var okCases = map[string]func(t *testing.T, r *Rules){
	"format":        checkFormat,
	"yaml_features": checkYAMLFeatures,
}

// TestLoadRulesOK loads each file under testdata/ok, runs its okCases
// checks and compares the effective rules (MarshalJSON, indented) with its
// .golden file.
func TestLoadRulesOK(t *testing.T) {
	paths, err := filepath.Glob("testdata/ok/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	if len(paths) != len(okCases) {
		t.Errorf("%d cases under testdata/ok, %d in okCases", len(paths), len(okCases))
	}
	for _, path := range paths {
		base := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(base, func(t *testing.T) {
			r, err := LoadRules(path)
			if err != nil {
				t.Fatal(err)
			}
			check, ok := okCases[base]
			if !ok {
				t.Fatalf("no entry in okCases: check what these rules decide")
			}
			check(t, r)
			b, err := json.MarshalIndent(r, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata/ok", base+".golden"), append(b, '\n'))
		})
	}
}

// matchCase is one request descriptor and what the rules must answer.
type matchCase struct {
	name       string
	domain     string
	entries    []Entry
	wantRule   string // "" when nothing applies
	wantLimits string // limitsString
	check      func(t *testing.T, m Match)
}

func checkMatches(t *testing.T, r *Rules, tests []matchCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok := r.Match(tt.domain, tt.entries)
			if ok != (tt.wantRule != "") || m.Rule != tt.wantRule || limitsString(m.Limits) != tt.wantLimits {
				t.Fatalf("Match = rule %q limits %q (ok %v), want rule %q limits %q", m.Rule, limitsString(m.Limits), ok, tt.wantRule, tt.wantLimits)
			}
			if tt.check != nil {
				tt.check(t, m)
			}
		})
	}
}

// firstLimit checks the first limit of a match.
func firstLimit(what string, ok func(l *Limit) bool) func(t *testing.T, m Match) {
	return func(t *testing.T, m Match) {
		t.Helper()
		if !ok(m.Limits[0]) {
			t.Errorf("limit %+v: want %s", *m.Limits[0], what)
		}
	}
}

// checkFormat: each part of the format in testdata/ok/format.yaml decides
// what the reference's README says it decides.
func checkFormat(t *testing.T, r *Rules) {
	const d = "storefront"
	checkMatches(t, r, []matchCase{
		{name: "a grouping value has no limit", domain: d, entries: entries("channel=mobile")},
		{name: "its key-only child", domain: d, entries: entries("channel=mobile", "device_id=d1"), wantRule: "channel_mobile.device_id", wantLimits: "9/24h0m0s"},
		{name: "key-only limit", domain: d, entries: entries("peer=198.51.100.1"), wantRule: "peer", wantLimits: "15/1s"},
		{name: "listed value refused", domain: d, entries: entries("peer=198.51.100.7"), wantRule: "peer_198.51.100.7", wantLimits: "0/1s"},
		{name: "unlimited", domain: d, entries: entries("internal_tool=x"), wantRule: "internal_tool", wantLimits: "unlimited"},
		{name: "shadow mode", domain: d, entries: entries("rollout=r", "cohort=early"), wantRule: "rollout.cohort_early", wantLimits: "11/1s",
			check: firstLimit("shadow, not quota", func(l *Limit) bool { return l.Shadow && !l.Quota })},
		{name: "named limit", domain: d, entries: entries("tier=gold", "member=m1"), wantRule: "tier_gold.member_m1", wantLimits: "6/1s",
			check: firstLimit("named gold_member", func(l *Limit) bool { return l.Name == "gold_member" && l.ID == "gold_member" })},
		{name: "replacing limit", domain: d, entries: entries("tier=silver", "member=m1"), wantRule: "tier_silver.member_m1", wantLimits: "12/1s",
			check: firstLimit("replacing gold_member", func(l *Limit) bool { return slices.Equal(l.Replaces, []string{"gold_member"}) })},
		{name: "quota mode and metric flags", domain: d, entries: entries("api_key=k"), wantRule: "api_key", wantLimits: "30/1m0s",
			check: firstLimit("quota and detailed metric, not shadow", func(l *Limit) bool { return l.Quota && l.DetailedMetric && !l.Shadow })},
		{name: "middle wildcard", domain: d, entries: entries("page=/shop/12/cart"), wantRule: "page_/shop/*/cart", wantLimits: "40/1m0s",
			check: func(t *testing.T, m Match) {
				if !slices.Equal(m.CounterEntries, entries("page=/shop/12/cart")) {
					t.Errorf("counter %v: an unshared wildcard counts each value apart", m.CounterEntries)
				}
			}},
		{name: "wildcard that does not match", domain: d, entries: entries("page=/shop/12/pay")},
		{name: "shared wildcard with metadata", domain: d, entries: entries("asset=img/a.png"), wantRule: "asset_img/*", wantLimits: "500/1h0m0s",
			check: func(t *testing.T, m Match) {
				if !slices.Equal(m.CounterEntries, entries("asset=img/*")) {
					t.Errorf("counter %v, want the shared asset=img/*", m.CounterEntries)
				}
				if got := fmt.Sprint(m.Metadata); got != "map[cost_center:map[id:media]]" {
					t.Errorf("metadata %s", got)
				}
			}},
	})
}

// checkYAMLFeatures: YAML that yaml.v2 (the reference's parser) reads, and
// so must Sluice.
func checkYAMLFeatures(t *testing.T, r *Rules) {
	if d, _ := r.Domain("features"); !d.FailureModeDeny {
		t.Error("failure_mode_deny: yes not read as true")
	}
	shadow := func(want bool) func(t *testing.T, m Match) {
		return firstLimit(fmt.Sprintf("shadow %v", want), func(l *Limit) bool { return l.Shadow == want })
	}
	checkMatches(t, r, []matchCase{
		{name: "anchor", domain: "features", entries: entries("tenant=other"), wantRule: "tenant", wantLimits: "1000/1m0s", check: shadow(true)},
		{name: "merge key, explicit key wins", domain: "features", entries: entries("tenant=acme"), wantRule: "tenant_acme", wantLimits: "1000/1m0s", check: shadow(false)},
		{name: "merged rate limit with hex override, numeric value", domain: "features", entries: entries("numeric=42"), wantRule: "numeric_42", wantLimits: "16/1m0s", check: shadow(false)},
		{name: "merge list and float", domain: "features", entries: entries("float=x"), wantRule: "float", wantLimits: "2000/1h0m0s", check: shadow(false)},
		{name: "null rate_limit", domain: "features", entries: entries("null=x")},
	})
}

func TestParseRulesProblemsCarryFileAndLine(t *testing.T) {
	_, err := ParseRules([]File{
		{Name: "a.yaml", Data: []byte("domain: a\ndescriptors:\n  - key: x\n    rate_limit: {unit: eon, requests_per_unit: 1}\n")},
		{Name: "b.yaml", Data: []byte("domain: b\ndescriptors:\n  - value: y\n")},
		{Name: "c.yaml", Data: []byte("domain: a\n")},
	})
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v", err)
	}
	want := []Problem{
		{File: "a.yaml", Line: 4, Msg: `invalid rate limit unit "eon" (want second, minute, hour, day, week, month or year)`},
		{File: "b.yaml", Line: 3, Msg: "descriptor has an empty key"},
	}
	if fmt.Sprint(ce.Problems) != fmt.Sprint(want) {
		t.Errorf("Problems = %v\nwant %v", ce.Problems, want)
	}
	// c.yaml repeats domain a only once a.yaml is valid.
	_, err = ParseRules([]File{
		{Name: "a.yaml", Data: []byte("domain: a\n")},
		{Name: "c.yaml", Data: []byte("# c\ndomain: a\n")},
	})
	if err == nil || err.Error() != `c.yaml:2: duplicate domain "a" (also defined at a.yaml:1)` {
		t.Errorf("err = %v", err)
	}
}

func TestParseRulesLimits(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{
			name:    "file too large",
			data:    append([]byte("domain: big\n#"), bytes.Repeat([]byte("x"), MaxRulesFileSize)...),
			wantErr: fmt.Sprintf("big.yaml: file is larger than %d bytes", MaxRulesFileSize),
		},
		{
			name:    "deep flow nesting",
			data:    []byte("domain: x\ndescriptors:\n  - key: a\n    metadata: {a: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "}\n"),
			wantErr: "big.yaml:4: invalid YAML: exceeded max depth of 10000",
		},
		{
			name:    "long keys repeated by aliases",
			data:    []byte("domain: x\ndescriptors:\n- &d {key: " + strings.Repeat("k", 1<<20) + ", descriptors: [*d, *d, *d]}\n"),
			wantErr: "big.yaml:3: aliases expand the file by more than 1048576 YAML nodes",
		},
		{
			name:    "long values are clipped in messages",
			data:    []byte("domain: x\ndescriptors:\n- {key: k, value: " + strings.Repeat("v", 1<<20) + ", share_threshold: true}\n"),
			wantErr: `big.yaml:3: share_threshold needs a wildcard value (containing '*'), but descriptor "k_` + strings.Repeat("v", 75) + `..." has none`,
		},
		{
			name:    "many problems are capped",
			data:    []byte("domain: x\ndescriptors:\n" + strings.Repeat("  - {key: a, bogus: 1}\n", 500)),
			wantErr: "big.yaml: too many problems; stopped after 99",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, err := ParseRules([]File{{Name: "big.yaml", Data: tt.data}})
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("ParseRules took %v", elapsed)
			}
			if err == nil {
				t.Fatal("no error")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) > maxProblems {
				t.Errorf("%d problems, want at most %d", len(lines), maxProblems)
			}
			if last := lines[len(lines)-1]; last != tt.wantErr {
				t.Errorf("last problem = %q, want %q", last, tt.wantErr)
			}
		})
	}
}

func TestLoadRulesTooLargeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, bytes.Repeat([]byte("#"), MaxRulesFileSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadRules(path)
	if err == nil || !strings.Contains(err.Error(), "file is larger than") {
		t.Errorf("err = %v", err)
	}
}

func TestLoadRulesMissingPath(t *testing.T) {
	_, err := LoadRules(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want fs.ErrNotExist", err)
	}
}

// writeFile creates path (and its directory) with content.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func domainRules(domain string, rpu int) string {
	return fmt.Sprintf("domain: %s\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: %d}\n", domain, rpu)
}

func TestLoadRulesDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "b.yml"), domainRules("b", 2))
	writeFile(t, filepath.Join(dir, "a.yaml"), domainRules("a", 1))
	writeFile(t, filepath.Join(dir, "C.YAML"), domainRules("c", 3))
	writeFile(t, filepath.Join(dir, ".hidden.yaml"), "not: [valid")
	writeFile(t, filepath.Join(dir, "notes.txt"), "not: [valid")
	writeFile(t, filepath.Join(dir, "a.yaml~"), "not: [valid")
	writeFile(t, filepath.Join(dir, "sub", "nested.yaml"), "not: [valid") // not recursive
	if err := os.Mkdir(filepath.Join(dir, "dir.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	files, err := ReadRuleFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f.Name))
	}
	if got := strings.Join(names, ","); got != "C.YAML,a.yaml,b.yml" {
		t.Errorf("ReadRuleFiles read %s, want C.YAML,a.yaml,b.yml (name order)", got)
	}
	r, err := LoadRules(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Domains(), ","); got != "a,b,c" {
		t.Errorf("Domains = %s", got)
	}
	if d, _ := r.Domain("b"); d.File != filepath.Join(dir, "b.yml") || d.Line != 1 {
		t.Errorf("domain b from %s:%d", d.File, d.Line)
	}
}

// TestLoadRulesConfigMap lays out a directory as the kubelet mounts a
// ConfigMap (files behind ..data, a symlink to a timestamped directory,
// swapped atomically on update) and loads it before and after an update.
func TestLoadRulesConfigMap(t *testing.T) {
	dir := t.TempDir()
	v1 := "..2024_05_01_10_00_00.000000001"
	writeFile(t, filepath.Join(dir, v1, "tiers.yaml"), domainRules("tiers", 10))
	writeFile(t, filepath.Join(dir, v1, "extra.yml"), domainRules("extra", 5))
	symlink(t, v1, filepath.Join(dir, "..data"))
	symlink(t, filepath.Join("..data", "tiers.yaml"), filepath.Join(dir, "tiers.yaml"))
	symlink(t, filepath.Join("..data", "extra.yml"), filepath.Join(dir, "extra.yml"))

	rpu := func(r *Rules, domain string) uint64 {
		t.Helper()
		m, ok := r.Match(domain, entries("k=v"))
		if !ok {
			t.Fatalf("no limit in %s", domain)
		}
		return m.Limits[0].RequestsPerUnit
	}
	r, err := LoadRules(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Domains(), ","); got != "extra,tiers" {
		t.Fatalf("Domains = %s (the ..data copies must not be read twice)", got)
	}
	if got := rpu(r, "tiers"); got != 10 {
		t.Errorf("tiers limit = %d, want 10", got)
	}
	if d, _ := r.Domain("tiers"); d.File != filepath.Join(dir, "tiers.yaml") {
		t.Errorf("File = %s, want the top-level name", d.File)
	}

	// The kubelet's update: write a new timestamped directory, then replace
	// ..data with a rename of a temporary symlink.
	v2 := "..2024_05_02_10_00_00.000000002"
	writeFile(t, filepath.Join(dir, v2, "tiers.yaml"), domainRules("tiers", 20))
	writeFile(t, filepath.Join(dir, v2, "extra.yml"), domainRules("extra", 5))
	symlink(t, v2, filepath.Join(dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, v1)); err != nil {
		t.Fatal(err)
	}
	r, err = LoadRules(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := rpu(r, "tiers"); got != 20 {
		t.Errorf("after update tiers limit = %d, want 20", got)
	}

	// A key removed from the ConfigMap leaves a dangling top-level symlink
	// until the kubelet removes it; say so rather than skip it silently.
	if err := os.Remove(filepath.Join(dir, v2, "extra.yml")); err != nil {
		t.Fatal(err)
	}
	_, err = LoadRules(dir)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "extra.yml")+": cannot read") {
		t.Errorf("dangling symlink: err = %v", err)
	}
}

func TestLoadRulesSymlinkedPath(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "real", "r.yaml"), domainRules("r", 1))
	symlink(t, filepath.Join(dir, "real"), filepath.Join(dir, "current"))
	symlink(t, filepath.Join(dir, "real", "r.yaml"), filepath.Join(dir, "file.yaml"))
	for _, p := range []string{filepath.Join(dir, "current"), filepath.Join(dir, "file.yaml")} {
		r, err := LoadRules(p)
		if err != nil {
			t.Fatalf("LoadRules(%s): %v", p, err)
		}
		if _, ok := r.Domain("r"); !ok {
			t.Errorf("LoadRules(%s): no domain r", p)
		}
	}
}

// FuzzParseRules checks that no input panics or hangs ParseRules, that every
// failure is a *ConfigError with problems, and that accepted rules can be
// marshalled and matched. Seeds: every testdata YAML file (the compat
// fixtures included), the example config, and the corpus under
// testdata/fuzz/FuzzParseRules.
func FuzzParseRules(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*.y*ml")
	more, _ := filepath.Glob("testdata/errors/*/*.y*ml")
	seeds = append(seeds, more...)
	compat, _ := filepath.Glob("testdata/compat/*/*.yaml")
	seeds = append(seeds, compat...)
	seeds = append(seeds, "../config/ratelimit/tiers.yaml")
	for _, path := range seeds {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(matchConfig))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRules([]File{{Name: "fuzz.yaml", Data: data}})
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || len(ce.Problems) == 0 || len(ce.Problems) > maxProblems {
				t.Fatalf("bad error %T: %v", err, err)
			}
			for _, p := range ce.Problems {
				if p.File != "fuzz.yaml" || p.Msg == "" {
					t.Fatalf("bad problem %+v", p)
				}
			}
			return
		}
		if _, err := json.Marshal(r); err != nil {
			t.Fatalf("MarshalJSON: %v", err)
		}
		for _, d := range r.Domains() {
			for _, req := range [][]Entry{
				entries("k=v"), entries("key=value", "k=v"), entries("tier=pro", "tenant_id=acme"), entries("a="),
			} {
				if m, ok := r.Match(d, req); ok && len(m.Limits) == 0 {
					t.Fatalf("match without limits")
				}
			}
		}
	})
}
