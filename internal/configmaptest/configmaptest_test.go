package configmaptest_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/configmaptest"
)

// names lists the directory's entries with their symlink targets.
func names(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		out[e.Name()] = target
	}
	return out
}

var tsDir = regexp.MustCompile(`^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d+$`)

func TestLayoutAndUpdate(t *testing.T) {
	d := configmaptest.New(t, map[string]string{"a.yaml": "one", "b.yaml": "two"})
	got := names(t, d.Path())
	if len(got) != 4 || got["a.yaml"] != "..data/a.yaml" || got["b.yaml"] != "..data/b.yaml" || !tsDir.MatchString(got["..data"]) {
		t.Fatalf("layout %v; want a.yaml and b.yaml through ..data, ..data a timestamped directory", got)
	}
	first := got["..data"]
	if _, ok := got[first]; !ok {
		t.Fatalf("..data points at %s, which is not in %v", first, got)
	}

	d.Update(map[string]string{"a.yaml": "three", "c.yaml": "four"})
	got = names(t, d.Path())
	if _, ok := got[first]; ok {
		t.Errorf("the previous version %s is still there: %v", first, got)
	}
	if _, ok := got["b.yaml"]; ok {
		t.Errorf("dropped key b.yaml is still visible: %v", got)
	}
	if got["c.yaml"] != "..data/c.yaml" || got["..data"] == first || len(got) != 4 {
		t.Errorf("after update %v; want a.yaml and c.yaml through a new ..data", got)
	}
	for key, want := range map[string]string{"a.yaml": "three", "c.yaml": "four"} {
		b, err := os.ReadFile(d.File(key))
		if err != nil || string(b) != want {
			t.Errorf("%s = %q, %v; want %q", key, b, err, want)
		}
	}
	for name := range got {
		if strings.HasSuffix(name, "_tmp") {
			t.Errorf("%s left behind", name)
		}
	}
}
