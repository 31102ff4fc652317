package kubernetes

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// repoRoot is the repository, seen from this package's directory.
var repoRoot = filepath.Join("..", "..")

// object is one rendered Kubernetes object.
type object struct {
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
	JSON       []byte         // the document as JSON
	Map        map[string]any // the same, decoded into maps
	Source     string         // overlay (or file) it came from
}

func (o *object) String() string {
	return fmt.Sprintf("%s: %s %s/%s", o.Source, o.Kind, o.Namespace, o.Name)
}

// renderer returns the command that renders a kustomization: `kubectl
// kustomize` (what `kubectl apply -k` runs) when kubectl embeds kustomize v5,
// else a standalone `kustomize build` (scripts/services.sh installs one of
// them). Without either the test is skipped locally and fails in CI (CI=true).
func renderer(t *testing.T) []string {
	t.Helper()
	if p, err := exec.LookPath("kubectl"); err == nil {
		out, err := exec.Command(p, "version", "--client", "-o", "json").Output()
		var v struct {
			KustomizeVersion string `json:"kustomizeVersion"`
		}
		if err == nil && json.Unmarshal(out, &v) == nil && strings.HasPrefix(v.KustomizeVersion, "v5.") {
			return []string{p, "kustomize"}
		}
	}
	if p, err := exec.LookPath("kustomize"); err == nil {
		return []string{p, "build"}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("neither kubectl with kustomize v5 nor kustomize found; scripts/services.sh installs them")
	}
	t.Skip("neither kubectl with kustomize v5 nor kustomize found; run scripts/services.sh to install them")
	return nil
}

// overlays are the directories under overlays/ a user applies with `kubectl apply -k`.
func overlays(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("overlays")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join("overlays", e.Name(), "kustomization.yaml")); e.IsDir() && err == nil {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	if len(out) < 5 {
		t.Fatalf("only overlays %v", out)
	}
	return out
}

var (
	renderMu    sync.Mutex // guards rendered
	rendered    = map[string][]*object{}
	errRendered = map[string]error{}
)

// render returns the objects `kubectl kustomize overlays/<name>` prints,
// rendering each overlay once per test binary.
func render(t *testing.T, name string) []*object {
	t.Helper()
	cmdline := renderer(t)
	renderMu.Lock()
	defer renderMu.Unlock()
	if objs, ok := rendered[name]; ok || errRendered[name] != nil {
		if err := errRendered[name]; err != nil {
			t.Fatal(err)
		}
		return objs
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(cmdline[0], append(cmdline[1:], filepath.Join("overlays", name))...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		errRendered[name] = fmt.Errorf("%s overlays/%s: %w\n%s", strings.Join(cmdline[1:], " "), name, err, stderr.String())
		t.Fatal(errRendered[name])
	}
	objs, err := parseObjects(stdout.Bytes(), "overlays/"+name)
	if err != nil {
		errRendered[name] = err
		t.Fatal(err)
	}
	rendered[name] = objs
	return objs
}

// parseObjects splits a multi-document YAML stream into objects. Duplicate
// keys are errors.
func parseObjects(data []byte, source string) ([]*object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []*object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if string(js) == "null" {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal(js, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		o := &object{JSON: js, Map: m, Source: source}
		o.APIVersion, _ = m["apiVersion"].(string)
		o.Kind, _ = m["kind"].(string)
		if md, ok := m["metadata"].(map[string]any); ok {
			o.Name, _ = md["name"].(string)
			o.Namespace, _ = md["namespace"].(string)
		}
		out = append(out, o)
	}
	return out, nil
}

// standalone are the manifests applied on their own (not through an overlay).
var standalone = []string{"overlays/istio/sidecar-envoyfilter.yaml"}

func loadStandalone(t *testing.T, path string) []*object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := parseObjects(data, path)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// allObjects is every object of every overlay and standalone manifest.
func allObjects(t *testing.T) []*object {
	t.Helper()
	var out []*object
	for _, o := range overlays(t) {
		out = append(out, render(t, o)...)
	}
	for _, f := range standalone {
		out = append(out, loadStandalone(t, f)...)
	}
	return out
}

// ofKind returns the objects of a kind.
func ofKind(objs []*object, kind string) []*object {
	var out []*object
	for _, o := range objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// one returns the single object of a kind and name, or fails.
func one(t *testing.T, objs []*object, kind, name string) *object {
	t.Helper()
	var hits []*object
	for _, o := range objs {
		if o.Kind == kind && o.Name == name {
			hits = append(hits, o)
		}
	}
	if len(hits) != 1 {
		t.Fatalf("%d %s named %s; want 1", len(hits), kind, name)
	}
	return hits[0]
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

var (
	modDirMu sync.Mutex // guards modDirs
	modDirs  = map[string]string{}
)

// moduleDir is the module cache directory of a module this module requires
// (go.mod pins its version; go.sum its content).
func moduleDir(t *testing.T, mod string) string {
	t.Helper()
	modDirMu.Lock()
	defer modDirMu.Unlock()
	if d, ok := modDirs[mod]; ok {
		return d
	}
	out, err := exec.Command(goTool(), "list", "-m", "-f", "{{.Dir}}", mod).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", mod, err)
	}
	d := strings.TrimSpace(string(out))
	if d == "" {
		t.Fatalf("module %s is not downloaded (go mod download)", mod)
	}
	modDirs[mod] = d
	return d
}
