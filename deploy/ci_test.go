package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCIRunSetsCI runs .ci/run in a copy of the repository layout whose
// scripts/test.sh only reports its environment: the CI entry point must
// export CI=true, or the tests that fail under CI instead of skipping
// (internal/testenv: a missing promtool, -short) would skip silently.
func TestCIRunSetsCI(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{".ci", "scripts"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, ".ci", "run"), readRepoFile(t, ".ci", "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	fake := "#!/usr/bin/env bash\necho \"CI=${CI-unset} args=$*\"\n"
	if err := os.WriteFile(filepath.Join(dir, "scripts", "test.sh"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", filepath.Join(dir, ".ci", "run"))
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "CI=") })
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf(".ci/run: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "CI=true args=" {
		t.Errorf(".ci/run ran scripts/test.sh with %q, want CI=true and no arguments", got)
	}
}
