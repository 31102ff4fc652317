package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestHelpers runs this test binary again for each case (the helpers end a
// test with Skip or Fatal) and reads the verdict from its output.
func TestHelpers(t *testing.T) {
	if name := os.Getenv("TESTENV_CASE"); name != "" {
		switch name {
		case "short":
			SkipShort(t, "needs a server")
		case "missing":
			LookPath(t, "sluice-no-such-program", "install it")
		}
		t.Log("not skipped")
		return
	}
	tests := []struct {
		name, ci string
		args     []string
		want     string // in the child's output
		wantFail bool
	}{
		{name: "short", ci: "", args: []string{"-test.short"}, want: "needs a server; skipped under -short"},
		{name: "short", ci: "true", args: []string{"-test.short"}, want: "-short under CI=true would skip this test (needs a server)", wantFail: true},
		{name: "short", ci: "true", want: "not skipped"},
		{name: "missing", ci: "", want: "sluice-no-such-program not found: install it"},
		{name: "missing", ci: "true", want: "sluice-no-such-program not found under CI=true: install it", wantFail: true},
		{name: "missing", ci: "false", want: "--- SKIP"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/CI="+tt.ci, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], append([]string{"-test.run=^TestHelpers$", "-test.v"}, tt.args...)...)
			cmd.Env = append(os.Environ(), "TESTENV_CASE="+tt.name, "CI="+tt.ci)
			out, err := cmd.CombinedOutput()
			if (err != nil) != tt.wantFail {
				t.Errorf("exit error %v, want failure %v\n%s", err, tt.wantFail, out)
			}
			if !strings.Contains(string(out), tt.want) {
				t.Errorf("output lacks %q:\n%s", tt.want, out)
			}
		})
	}
}
