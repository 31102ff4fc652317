package deploy

import (
	"bufio"
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// dockerfile is the repository's Dockerfile read into stages.
type dockerfile struct {
	args   map[string]string // ARGs before the first FROM, with defaults
	stages []stage
}

type stage struct {
	from, name string
	lines      []string // instructions after FROM, continuation lines joined
}

func (s stage) instr(name string) []string {
	var out []string
	for _, l := range s.lines {
		if k, rest, _ := strings.Cut(l, " "); strings.EqualFold(k, name) {
			out = append(out, strings.TrimSpace(rest))
		}
	}
	return out
}

func loadDockerfile(t *testing.T) dockerfile {
	t.Helper()
	data := readRepoFile(t, "Dockerfile")
	d := dockerfile{args: map[string]string{}}
	var joined []string
	cur := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if cur == "" && (l == "" || strings.HasPrefix(l, "#")) {
			continue
		}
		if strings.HasPrefix(l, "#") { // a comment inside a continued instruction
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		joined = append(joined, strings.Join(strings.Fields(cur+l), " "))
		cur = ""
	}
	for _, l := range joined {
		k, rest, _ := strings.Cut(l, " ")
		switch strings.ToUpper(k) {
		case "FROM":
			f := strings.Fields(rest)
			var st stage
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					st.name = f[i+1]
					i++
				default:
					st.from = f[i]
				}
			}
			d.stages = append(d.stages, st)
		case "ARG":
			if len(d.stages) == 0 {
				for _, a := range strings.Fields(rest) {
					name, def, _ := strings.Cut(a, "=")
					d.args[name] = def
				}
				continue
			}
			fallthrough
		default:
			if len(d.stages) == 0 {
				t.Fatalf("Dockerfile: %q before the first FROM", l)
			}
			d.stages[len(d.stages)-1].lines = append(d.stages[len(d.stages)-1].lines, l)
		}
	}
	if len(d.stages) == 0 {
		t.Fatal("Dockerfile has no FROM")
	}
	return d
}

func (d dockerfile) stage(t *testing.T, name string) stage {
	t.Helper()
	for _, s := range d.stages {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("Dockerfile has no stage %q", name)
	return stage{}
}

// goBuild returns the stage's `go build` command line.
func (s stage) goBuild(t *testing.T) string {
	t.Helper()
	for _, r := range s.instr("RUN") {
		if i := strings.Index(r, "go build "); i >= 0 {
			return r[i:]
		}
	}
	t.Fatalf("stage %s has no go build", s.name)
	return ""
}

var ldflagsRe = regexp.MustCompile(`-ldflags="([^"]*)"`)

func TestDockerfile(t *testing.T) {
	d := loadDockerfile(t)

	t.Run("go version matches go.mod", func(t *testing.T) {
		var goLine, toolchain string
		for _, l := range strings.Split(string(readRepoFile(t, "go.mod")), "\n") {
			if v, ok := strings.CutPrefix(l, "go "); ok {
				goLine = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(l, "toolchain go"); ok {
				toolchain = strings.TrimSpace(v)
			}
		}
		want := goLine
		if toolchain != "" {
			want = toolchain
		}
		if got := d.args["GO_VERSION"]; got != want {
			t.Errorf("Dockerfile ARG GO_VERSION=%s; go.mod needs go %s (the builder runs with GOTOOLCHAIN=local)", got, want)
		}
	})

	t.Run("base images pinned", func(t *testing.T) {
		names := map[string]bool{}
		for _, s := range d.stages {
			from := os.Expand(s.from, func(k string) string { return d.args[k] })
			if names[from] {
				continue // an earlier stage
			}
			if err := checkImageRef(from); err != nil {
				t.Errorf("stage %s: %v", s.name, err)
			}
			names[s.name] = true
		}
	})

	t.Run("build", func(t *testing.T) {
		b := d.stage(t, "build")
		cmd := b.goBuild(t)
		for _, want := range []string{"-trimpath", "-X main.version=${VERSION}", "./cmd/sluice", "./cmd/demoapi", "./cmd/healthprobe"} {
			if !strings.Contains(cmd, want) {
				t.Errorf("go build %q lacks %s", cmd, want)
			}
		}
		env := strings.Join(b.instr("ENV"), " ")
		if !strings.Contains(env, "CGO_ENABLED=0") {
			t.Errorf("build stage ENV %q does not set CGO_ENABLED=0 (a static binary for distroless/static)", env)
		}
		runs := strings.Join(b.instr("RUN"), "\n")
		for _, want := range []string{"--mount=type=cache,target=/go/pkg/mod", "--mount=type=cache,target=/root/.cache/go-build"} {
			if !strings.Contains(runs, want) {
				t.Errorf("build stage lacks %s", want)
			}
		}
	})

	t.Run("final images", func(t *testing.T) {
		if last := d.stages[len(d.stages)-1].name; last != "sluice" {
			t.Errorf("the last (default) stage is %q; want sluice", last)
		}
		cfg, _ := sluiceConfig(t, loadCompose(t))
		for _, tt := range []struct {
			stage, entrypoint string
			expose            []string
			health            string
		}{
			{stage: "sluice", entrypoint: `["/usr/local/bin/sluice"]`, expose: []string{"8081", "9091"},
				health: "http://127.0.0.1:9091/readyz"},
			{stage: "demoapi", entrypoint: `["/usr/local/bin/demoapi"]`, expose: []string{"8000"},
				health: "http://127.0.0.1:8000/healthz"},
		} {
			s := d.stage(t, tt.stage)
			user := s.instr("USER")
			if len(user) == 0 || strings.HasPrefix(user[len(user)-1], "0") || strings.HasPrefix(user[len(user)-1], "root") {
				t.Errorf("%s: USER %v; want a non-root user", tt.stage, user)
			}
			if ep := s.instr("ENTRYPOINT"); !slices.Equal(ep, []string{tt.entrypoint}) {
				t.Errorf("%s: ENTRYPOINT %v; want %s", tt.stage, ep, tt.entrypoint)
			}
			if ex := strings.Fields(strings.Join(s.instr("EXPOSE"), " ")); !slices.Equal(ex, tt.expose) {
				t.Errorf("%s: EXPOSE %v; want %v", tt.stage, ex, tt.expose)
			}
			if hc := strings.Join(s.instr("HEALTHCHECK"), " "); !strings.Contains(hc, `"/usr/local/bin/healthprobe", "`+tt.health+`"`) {
				t.Errorf("%s: HEALTHCHECK %q does not run healthprobe on %s", tt.stage, hc, tt.health)
			}
			if !strings.Contains(strings.Join(s.instr("COPY"), " "), "/out/healthprobe") {
				t.Errorf("%s: healthprobe is not copied into the image", tt.stage)
			}
		}
		// EXPOSE follows Sluice's default ports, which compose uses.
		if !strings.HasSuffix(cfg.Server.GRPCAddr, ":8081") || !strings.HasSuffix(cfg.Server.AdminAddr, ":9091") {
			t.Errorf("compose runs sluice on %s / %s; the image exposes 8081 / 9091", cfg.Server.GRPCAddr, cfg.Server.AdminAddr)
		}
	})
}

// dockerignore is a .dockerignore: the last matching pattern decides, "!"
// re-includes, a pattern matching a directory excludes what is under it, and
// "**" spans directories (Docker's build context rules).
type dockerignore []struct {
	re      *regexp.Regexp
	include bool
}

func parseDockerignore(data string) dockerignore {
	var d dockerignore
	for _, l := range strings.Split(data, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		include := strings.HasPrefix(l, "!")
		l = strings.TrimPrefix(l, "!")
		l = strings.TrimPrefix(filepath.ToSlash(filepath.Clean(l)), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(l); i++ {
			switch c := l[i]; {
			case strings.HasPrefix(l[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(l[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("$")
		d = append(d, struct {
			re      *regexp.Regexp
			include bool
		}{regexp.MustCompile(re.String()), include})
	}
	return d
}

// excluded reports whether path (slash-separated, relative to the context) is
// left out of the build context.
func (d dockerignore) excluded(path string) bool {
	parts := strings.Split(path, "/")
	out := false
	for _, p := range d {
		for i := 1; i <= len(parts); i++ {
			if p.re.MatchString(strings.Join(parts[:i], "/")) {
				out = !p.include
				break
			}
		}
	}
	return out
}

func TestDockerignoreMatcher(t *testing.T) {
	d := parseDockerignore("# c\n.git\n/bin\ndeploy\n**/testdata\n**/*_test.go\n*.md\n!README.md\n")
	tests := []struct {
		path string
		want bool
	}{
		{".git/HEAD", true},
		{"bin/sluice", true},
		{"cmd/bin/x.go", false},
		{"deploy/README.md", true},
		{"envoy/testdata/bad.yaml", true},
		{"testdata/x", true},
		{"envoy/config_test.go", true},
		{"envoy/config.go", false},
		{"NOTES.md", true},
		{"README.md", false},
		{"docs/x.md", false},
		{"go.mod", false},
	}
	for _, tt := range tests {
		if got := d.excluded(tt.path); got != tt.want {
			t.Errorf("excluded(%q) = %v; want %v", tt.path, got, tt.want)
		}
	}
}

func goTool(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// TestDockerBuildContext checks that .dockerignore keeps every file the
// image's go build reads: the Go and embedded files of every package of this
// module the three commands import, and go.mod and go.sum.
func TestDockerBuildContext(t *testing.T) {
	ign := parseDockerignore(string(readRepoFile(t, ".dockerignore")))
	cmd := exec.Command(goTool(t), "list", "-deps",
		"-f", `{{if and (not .Standard) .Module}}{{if .Module.Main}}{{.Dir}}{{range .GoFiles}}|{{.}}{{end}}{{range .EmbedFiles}}|{{.}}{{end}}{{end}}{{end}}`,
		"./cmd/sluice", "./cmd/demoapi", "./cmd/healthprobe")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"go.mod", "go.sum"}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" {
			continue
		}
		f := strings.Split(l, "|")
		dir, err := filepath.Rel(abs, f[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range f[1:] {
			files = append(files, filepath.ToSlash(filepath.Join(dir, name)))
		}
	}
	if len(files) < 20 {
		t.Fatalf("only %d files listed: %v", len(files), files)
	}
	for _, f := range files {
		if ign.excluded(f) {
			t.Errorf(".dockerignore leaves %s out of the build context, but the build needs it", f)
		}
	}
	for _, f := range []string{".git/HEAD", "deploy/README.md", "envoy/config_test.go"} {
		if !ign.excluded(f) {
			t.Errorf(".dockerignore keeps %s in the build context", f)
		}
	}
}

// TestStaticBuild builds the three commands with the Dockerfile's flags and
// checks the result: static (no ELF interpreter: runs on distroless/static
// and scratch), the version from -ldflags, and `sluice check-config` accepting
// the compose stack's config as the container would read it.
func TestStaticBuild(t *testing.T) {
	testenv.SkipShort(t, "builds three binaries")
	d := loadDockerfile(t)
	gb := d.stage(t, "build").goBuild(t)
	m := ldflagsRe.FindStringSubmatch(gb)
	if m == nil {
		t.Fatalf("no -ldflags=\"...\" in %q", gb)
	}
	const version = "deploy-test-1.2.3"
	ldflags := strings.ReplaceAll(m[1], "${VERSION}", version)
	out := t.TempDir()
	cmd := exec.Command(goTool(t), "build", "-trimpath", "-ldflags="+ldflags, "-o", out+string(filepath.Separator),
		"./cmd/sluice", "./cmd/demoapi", "./cmd/healthprobe")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	for _, name := range []string{"sluice", "demoapi", "healthprobe"} {
		f, err := elf.Open(filepath.Join(out, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has an ELF interpreter: it is dynamically linked", name)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s links %v", name, libs)
		}
		f.Close()
	}
	sluice := filepath.Join(out, "sluice")
	if b, err := exec.Command(sluice, "version").CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "sluice "+version {
		t.Errorf("sluice version = %q, %v; want %q", b, err, "sluice "+version)
	}

	// The compose command with serve → check-config and container paths → repository paths.
	c := loadCompose(t)
	s := c.svc(t, "sluice")
	f := parseSluiceCommand(t, s)
	args := []string{"check-config"}
	for _, kv := range [][2]string{{"--config", f.config}, {"--ratelimit-config", f.rlConfig}} {
		if kv[1] == "" {
			continue
		}
		host, err := s.hostPath(kv[1])
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, kv[0], host)
	}
	cc := exec.Command(sluice, args...)
	cc.Env = []string{} // no SLUICE_CONFIG or REDIS_URL from this machine
	if b, err := cc.CombinedOutput(); err != nil {
		t.Errorf("sluice %s: %v\n%s", strings.Join(args, " "), err, b)
	} else {
		t.Logf("sluice %s:\n%s", strings.Join(args, " "), b)
	}
}
