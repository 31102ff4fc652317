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

// TestLoadRulesErrors loads each file or directory under testdata/errors and
// compares the error with its .golden file.
func TestLoadRulesErrors(t *testing.T) {
	entries, err := os.ReadDir("testdata/errors")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".golden") {
			continue
		}
		seen++
		base := strings.TrimSuffix(strings.TrimSuffix(name, ".yaml"), ".yml")
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
			golden(t, filepath.Join("testdata/errors", base+".golden"), []byte(err.Error()+"\n"))
		})
	}
	if seen < 20 {
		t.Errorf("only %d error cases found", seen)
	}
}

// TestLoadRulesOK loads each file under testdata/ok and compares the
// effective rules (MarshalJSON, indented) with its .golden file.
func TestLoadRulesOK(t *testing.T) {
	paths, err := filepath.Glob("testdata/ok/*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, path := range paths {
		base := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(base, func(t *testing.T) {
			r, err := LoadRules(path)
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.MarshalIndent(r, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join("testdata/ok", base+".golden"), append(b, '\n'))
		})
	}
}

func TestLoadRulesYAMLFeatures(t *testing.T) {
	r, err := LoadRules("testdata/ok/yaml_features.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := r.Domain("features"); !d.FailureModeDeny {
		t.Error("failure_mode_deny: yes not read as true")
	}
	tests := []struct {
		name       string
		entries    []Entry
		wantLimits string
		wantShadow bool
	}{
		{"anchor", entries("tenant=other"), "1000/1m0s", true},
		{"merge key, explicit key wins", entries("tenant=acme"), "1000/1m0s", false},
		{"merged rate limit with hex override, numeric value", entries("numeric=42"), "16/1m0s", false},
		{"merge list and float", entries("float=x"), "2000/1h0m0s", false},
		{"null rate_limit", entries("null=x"), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok := r.Match("features", tt.entries)
			if got := limitsString(m.Limits); got != tt.wantLimits || ok != (tt.wantLimits != "") {
				t.Fatalf("limits = %q (ok %v), want %q", got, ok, tt.wantLimits)
			}
			if ok && m.Limits[0].Shadow != tt.wantShadow {
				t.Errorf("Shadow = %v, want %v", m.Limits[0].Shadow, tt.wantShadow)
			}
		})
	}
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
// marshalled and matched. Seeds: every testdata YAML file, the example
// config, and the corpus under testdata/fuzz/FuzzParseRules.
func FuzzParseRules(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*/*.y*ml")
	more, _ := filepath.Glob("testdata/errors/*/*.y*ml")
	seeds = append(seeds, more...)
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
