// Package testenv decides when a test may skip. Locally, -short and a missing
// tool skip the tests that need what is missing, with the reason; under CI
// (CI=true, exported by .ci/run) the same calls fail the test, so a CI run
// can never pass by skipping.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// CI reports whether the tests run in CI: the environment variable CI is
// "true", as .ci/run sets it and as hosted CI services do.
func CI() bool { return os.Getenv("CI") == "true" }

// SkipShort skips t under -short, naming what the test needs (why). Under CI
// it fails t instead: CI runs every test.
func SkipShort(t testing.TB, why string) {
	t.Helper()
	if !testing.Short() {
		return
	}
	if CI() {
		t.Fatalf("-short under CI=true would skip this test (%s); CI runs every test", why)
	}
	t.Skipf("%s; skipped under -short", why)
}

// LookPath returns the path of the named program. When it is not installed
// the test is skipped with install (how to get it), or fails under CI.
func LookPath(t testing.TB, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if CI() {
		t.Fatalf("%s not found under CI=true: %s", name, install)
	}
	t.Skipf("%s not found: %s", name, install)
	return ""
}
