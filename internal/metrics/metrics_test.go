package metrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRegisterAll(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_test_a_total", Help: "a"})
	b := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_test_b_total", Help: "b"})
	r, err := RegisterAll(reg, a, b)
	if err != nil {
		t.Fatal(err)
	}
	// A second set with a clashing name registers nothing at all.
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_test_c_total", Help: "c"})
	dup := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_test_a_total", Help: "a"})
	if _, err := RegisterAll(reg, c, dup); err == nil {
		t.Fatal("clashing registration succeeded")
	}
	if err := reg.Register(c); err != nil {
		t.Fatalf("c was left registered after the failed RegisterAll: %v", err)
	}
	reg.Unregister(c)
	// Unregister frees the names for a new instance.
	r.Unregister()
	if _, err := RegisterAll(reg, a, b); err != nil {
		t.Fatalf("register again after Unregister: %v", err)
	}
	// A nil registry and a nil Registration are no-ops.
	nr, err := RegisterAll(nil, a)
	if err != nil {
		t.Fatal(err)
	}
	nr.Unregister()
	var none *Registration
	none.Unregister()
}

func TestNewRegistry(t *testing.T) {
	reg := NewRegistry("v1.2.3")
	for _, want := range []string{"sluice_build_info", "go_goroutines", "process_cpu_seconds_total"} {
		if n, err := testutil.GatherAndCount(reg, want); err != nil || n == 0 {
			t.Errorf("registry lacks %s (%d series, %v)", want, n, err)
		}
	}
}
