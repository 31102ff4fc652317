package ratelimitsvc_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/configmaptest"
	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/ratelimitsvc"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// noLimiter allows everything; the reload tests never reach Redis.
type noLimiter struct{}

func (noLimiter) Do(_ context.Context, items []limiter.Item) ([]limiter.Result, bool, error) {
	return make([]limiter.Result, len(items)), true, nil
}

func rulesFor(domain string) string {
	return "domain: " + domain + "\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n"
}

// waitFor polls cond for up to 5 s: file events are asynchronous.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hasDomain(svc *ratelimitsvc.Service, d string) bool {
	_, ok := svc.Rules().Domain(d)
	return ok
}

func newWatchedService(t *testing.T, path string) (*ratelimitsvc.Service, *metricstest.Registry) {
	t.Helper()
	reg := metricstest.NewRegistry()
	svc, err := ratelimitsvc.New(ratelimitsvc.Config{}, noLimiter{}, "test:", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := ratelimitsvc.NewReloader(path, svc, time.Hour, nil)
	if err := r.Load(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	time.Sleep(50 * time.Millisecond) // let the watcher attach
	return svc, reg
}

func reloads(t *testing.T, reg *metricstest.Registry, result string) float64 {
	t.Helper()
	return counterSum(t, reg, "sluice_ratelimit_config_reloads_total", prometheus.Labels{"result": result})
}

func TestHotReloadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte(rulesFor("one")), 0o644); err != nil {
		t.Fatal(err)
	}
	svc, reg := newWatchedService(t, path)
	if !hasDomain(svc, "one") {
		t.Fatal("initial rules not loaded")
	}

	// A good edit is picked up.
	if err := os.WriteFile(path, []byte(rulesFor("two")), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "domain two", func() bool { return hasDomain(svc, "two") })

	// A bad edit is rejected; the old rules keep serving.
	if err := os.WriteFile(path, []byte("domain: three\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reload error metric", func() bool { return reloads(t, reg, "error") >= 1 })
	if !hasDomain(svc, "two") || hasDomain(svc, "three") {
		t.Fatal("invalid config replaced the rules in force")
	}

	// Editors that save by rename are seen too.
	tmp := filepath.Join(dir, ".rules.yaml.swp")
	if err := os.WriteFile(tmp, []byte(rulesFor("four")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "domain four", func() bool { return hasDomain(svc, "four") })
}

// TestHotReloadConfigMap mounts the rules the way a pod gets a ConfigMap
// (configmaptest: the kubelet's `..<timestamp>` directories, the `..data`
// symlink swapped by rename, visible names as symlinks through it) and updates
// it as the kubelet does, with --ratelimit-config naming the mount directory
// or one file in it. The periodic re-read is off (an hour): only the file
// events of the swap can apply a version.
func TestHotReloadConfigMap(t *testing.T) {
	bad := "domain: broken\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n"
	tests := []struct {
		name string
		path func(*configmaptest.Dir) string
		// keysFollow: a key added to (or dropped from) the ConfigMap is read
		// (or forgotten); true for a directory, not for one named file.
		keysFollow bool
	}{
		{name: "directory", path: (*configmaptest.Dir).Path, keysFollow: true},
		{name: "file", path: func(d *configmaptest.Dir) string { return d.File("tiers.yaml") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cm := configmaptest.New(t, map[string]string{"tiers.yaml": rulesFor("v1")})
			svc, reg := newWatchedService(t, tt.path(cm))
			if !hasDomain(svc, "v1") {
				t.Fatalf("initial ConfigMap rules not loaded: %v", svc.Rules().Domains())
			}

			cm.Update(map[string]string{"tiers.yaml": rulesFor("v2")})
			waitFor(t, "domain v2", func() bool { return hasDomain(svc, "v2") })
			if hasDomain(svc, "v1") {
				t.Error("old ConfigMap version still loaded beside the new one")
			}

			// A second key (kubectl edit adds one): read only when the mount directory is the path.
			cm.Update(map[string]string{"tiers.yaml": rulesFor("v2"), "extra.yaml": rulesFor("extra")})
			if tt.keysFollow {
				waitFor(t, "domain extra", func() bool { return hasDomain(svc, "extra") })
				cm.Update(map[string]string{"tiers.yaml": rulesFor("v2")})
				waitFor(t, "domain extra dropped", func() bool { return !hasDomain(svc, "extra") })
			}

			// An invalid version is rejected; the rules in force keep serving.
			errors := reloads(t, reg, "error")
			cm.Update(map[string]string{"tiers.yaml": bad})
			waitFor(t, "reload error", func() bool { return reloads(t, reg, "error") > errors })
			if !hasDomain(svc, "v2") || hasDomain(svc, "broken") {
				t.Fatalf("invalid ConfigMap version replaced the rules in force: %v", svc.Rules().Domains())
			}

			// Fixed again: applied, though the last good content came back from a new directory.
			cm.Update(map[string]string{"tiers.yaml": rulesFor("v3")})
			waitFor(t, "domain v3", func() bool { return hasDomain(svc, "v3") })
			if tt.keysFollow && hasDomain(svc, "extra") {
				t.Error("a dropped key's rules are still loaded")
			}
		})
	}
}

// logCounter is a slog.Handler counting records by message.
type logCounter struct {
	mu    sync.Mutex
	count map[string]int
}

func (h *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logCounter) WithGroup(string) slog.Handler            { return h }
func (h *logCounter) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.count[r.Message]++
	return nil
}

func (h *logCounter) n(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[msg]
}

// TestReloadLogsRejectionAndRecoveryOnce: a file that goes bad is logged
// once, not at every re-read while it stays bad, and its return to a valid
// version is logged once, even when that version is the one in force (its
// rules do not change, so nothing else would say the problem is over).
func TestReloadLogsRejectionAndRecoveryOnce(t *testing.T) {
	const (
		rejected  = "rate limit config rejected; previous rules keep serving"
		recovered = "rate limit config valid again"
	)
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	// Each version replaces the file whole (write, then rename), so that no
	// re-read sees a half-written file, which would be a rejection of its
	// own.
	write := func(s string) {
		t.Helper()
		tmp := filepath.Join(dir, ".rules.yaml.tmp")
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(rulesFor("one"))
	svc, err := ratelimitsvc.New(ratelimitsvc.Config{}, noLimiter{}, "test:", prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logCounter{count: map[string]int{}}
	r := ratelimitsvc.NewReloader(path, svc, 10*time.Millisecond, slog.New(logs))
	if err := r.Load(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	write("domain: one\ndescriptors:\n  - key: k\n    rate_limit: {unit: eon, requests_per_unit: 1}\n")
	waitFor(t, "the rejection", func() bool { return logs.n(rejected) > 0 })
	time.Sleep(150 * time.Millisecond) // many polls of the same bad file
	if n := logs.n(rejected); n != 1 {
		t.Errorf("the same invalid file was logged %d times, want once", n)
	}

	write(rulesFor("one")) // back to the rules in force
	waitFor(t, "the recovery", func() bool { return logs.n(recovered) > 0 })
	time.Sleep(150 * time.Millisecond)
	if n := logs.n(recovered); n != 1 {
		t.Errorf("the recovery was logged %d times, want once", n)
	}
	if !hasDomain(svc, "one") {
		t.Error("rules in force lost")
	}

	// A second, different mistake is news again.
	write("domain: one\ndescriptors:\n  - key: k\n    rate_limit: {unit: second}\n")
	waitFor(t, "the second rejection", func() bool { return logs.n(rejected) == 2 })
	write(rulesFor("two"))
	waitFor(t, "the second recovery", func() bool { return logs.n(recovered) == 2 })
	if !hasDomain(svc, "two") {
		t.Error("the valid new version was not applied")
	}
}
