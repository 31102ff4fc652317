package deploy

import (
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/envoy"
	"github.com/sluicehq/sluice/internal/devstack"
)

var exportRe = regexp.MustCompile(`(?m)^export (SLUICE_E2E_[A-Z_]+)=(\S+)$`)

// TestEnvoyE2EScript checks scripts/envoy-e2e.sh, which cannot run here (no
// Docker): the addresses it gives the tests are where envoy/envoy.yaml's
// listener and clusters point once its hosts file maps `sluice` and `app` to
// loopback, the tests read the variables it sets, and the workflow runs it.
func TestEnvoyE2EScript(t *testing.T) {
	script := string(readRepoFile(t, "scripts", "envoy-e2e.sh"))
	env := map[string]string{}
	for _, m := range exportRe.FindAllStringSubmatch(script, -1) {
		env[m[1]] = m[2]
	}
	ext := devstack.ExternalFromEnv(func(k string) string { return env[k] })
	if ext.Gateway == "" || env["SLUICE_E2E_SLUICE_ADDR"] == "" || env["SLUICE_E2E_APP_ADDR"] == "" {
		t.Fatalf("the script exports %v; want SLUICE_E2E_GATEWAY, _SLUICE_ADDR and _APP_ADDR", env)
	}
	settings, err := envoy.ParseSettings(envoy.DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(ext.Gateway)
	if err != nil {
		t.Fatal(err)
	}
	if want := port(t, settings.Address); u.Port() != strconv.Itoa(want) {
		t.Errorf("SLUICE_E2E_GATEWAY %s; envoy.yaml listens on %d", ext.Gateway, want)
	}
	hosts := regexp.MustCompile(`printf '127\.0\.0\.1 ([^\\]*)\\n`).FindStringSubmatch(script)
	if hosts == nil {
		t.Fatal("the script writes no hosts file line for 127.0.0.1")
	}
	for cluster, addr := range map[string]string{"sluice": ext.SluiceAddr, "app": ext.AppAddr} {
		h, p, err := net.SplitHostPort(settings.Clusters[cluster])
		if err != nil {
			t.Fatalf("envoy.yaml cluster %s: %v", cluster, err)
		}
		if !slices.Contains(strings.Fields(hosts[1]), h) {
			t.Errorf("envoy.yaml's %s cluster resolves %s, which the script's hosts file does not map to 127.0.0.1", cluster, h)
		}
		if ah, ap, _ := net.SplitHostPort(addr); ah != "127.0.0.1" || ap != p {
			t.Errorf("the tests serve %s on %s; envoy.yaml's cluster points at %s, mapped to 127.0.0.1:%s", cluster, addr, settings.Clusters[cluster], p)
		}
	}
	if !strings.Contains(script, "envoy --mode validate -c /etc/envoy/envoy.yaml") || !strings.Contains(script, `"$PWD/envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro"`) {
		t.Error("the script does not validate and run envoy/envoy.yaml")
	}
	if !strings.Contains(script, "-p 1") {
		t.Error("the tests share fixed ports: the script must run packages one at a time (-p 1)")
	}
	wf := string(readRepoFile(t, ".github", "workflows", "envoy-e2e.yml"))
	for _, want := range []string{"run: bash scripts/envoy-e2e.sh", "run: sudo bash scripts/services.sh", "go-version-file: go.mod"} {
		if !strings.Contains(wf, want) {
			t.Errorf(".github/workflows/envoy-e2e.yml lacks %q", want)
		}
	}
}
