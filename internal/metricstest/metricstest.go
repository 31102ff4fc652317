// Package metricstest lets tests read one series of a component's metrics
// with prometheus/testutil: a Registry remembers the collectors registered on
// it by metric name, and Value selects the series by its labels (the vector's
// own GetMetricWith) and reads it with testutil.ToFloat64. No test walks
// gathered metric families by hand.
package metricstest

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// Registry is a prometheus.Registry that also remembers which collector
// registered each metric name. Pass it wherever a component takes a
// prometheus.Registerer; it is also a prometheus.Gatherer for testutil's
// Gather* functions. Safe for concurrent use; use NewRegistry.
type Registry struct {
	*prometheus.Registry

	mu     sync.Mutex // guards byName
	byName map[string]prometheus.Collector
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{Registry: prometheus.NewRegistry(), byName: map[string]prometheus.Collector{}}
}

// Register registers c and remembers it under the names it describes.
func (r *Registry) Register(c prometheus.Collector) error {
	if err := r.Registry.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range names(c) {
		r.byName[name] = c
	}
	return nil
}

// MustRegister registers cs and panics on the first error, as
// prometheus.Registry's does.
func (r *Registry) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister unregisters c and forgets its names.
func (r *Registry) Unregister(c prometheus.Collector) bool {
	r.mu.Lock()
	for _, name := range names(c) {
		if r.byName[name] == c {
			delete(r.byName, name)
		}
	}
	r.mu.Unlock()
	return r.Registry.Unregister(c)
}

// Value returns the value of the series name{labels} (every label of the
// metric named, none for a metric without labels), read with
// testutil.ToFloat64. A series not yet observed reads 0 (and exists from
// then on, as GetMetricWith creates it). It fails the test when no
// collector registered name or labels do not fit it.
func (r *Registry) Value(t testing.TB, name string, labels prometheus.Labels) float64 {
	t.Helper()
	r.mu.Lock()
	c, ok := r.byName[name]
	r.mu.Unlock()
	if !ok {
		t.Fatalf("metricstest: no collector registered %s", name)
	}
	var (
		m   prometheus.Collector
		err error
	)
	switch v := c.(type) {
	case *prometheus.CounterVec:
		m, err = v.GetMetricWith(labels)
	case *prometheus.GaugeVec:
		m, err = v.GetMetricWith(labels)
	default:
		if len(labels) > 0 {
			err = fmt.Errorf("%T has no labels to select", c)
		}
		m = c
	}
	if err != nil {
		t.Fatalf("metricstest: %s%v: %v", name, labels, err)
	}
	return testutil.ToFloat64(m)
}

// Sum returns the sum of the counter or gauge series of name whose labels
// include labels (nil: every series), each read with testutil.ToFloat64.
// testutil reads one series at a time; Sum is for totals over a label, such
// as decisions of every rule. It fails the test when no collector registered
// name.
func (r *Registry) Sum(t testing.TB, name string, labels prometheus.Labels) float64 {
	t.Helper()
	r.mu.Lock()
	c, ok := r.byName[name]
	r.mu.Unlock()
	if !ok {
		t.Fatalf("metricstest: no collector registered %s", name)
	}
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	var sum float64
	for m := range ch {
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatalf("metricstest: %s: %v", name, err)
		}
		if includes(pb.GetLabel(), labels) {
			sum += testutil.ToFloat64(single{m})
		}
	}
	return sum
}

// Histogram returns the series name{labels} of a histogram vector (every
// label named) as the client library writes it: sample count and sum, and
// the classic and native buckets. A series not yet observed is empty. It
// fails the test when no histogram vector registered name.
func (r *Registry) Histogram(t testing.TB, name string, labels prometheus.Labels) *dto.Histogram {
	t.Helper()
	r.mu.Lock()
	c, ok := r.byName[name]
	r.mu.Unlock()
	v, isVec := c.(*prometheus.HistogramVec)
	if !ok || !isVec {
		t.Fatalf("metricstest: no histogram vector registered %s", name)
	}
	o, err := v.GetMetricWith(labels)
	if err != nil {
		t.Fatalf("metricstest: %s%v: %v", name, labels, err)
	}
	m, ok := o.(prometheus.Metric)
	if !ok {
		t.Fatalf("metricstest: %s: %T is no Metric", name, o)
	}
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		t.Fatalf("metricstest: %s: %v", name, err)
	}
	return pb.GetHistogram()
}

// includes reports whether pairs hold every label of want.
func includes(pairs []*dto.LabelPair, want prometheus.Labels) bool {
	n := 0
	for _, lp := range pairs {
		if v, ok := want[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// single is a Collector of one already collected metric, for
// testutil.ToFloat64.
type single struct{ m prometheus.Metric }

func (s single) Describe(ch chan<- *prometheus.Desc) { ch <- s.m.Desc() }
func (s single) Collect(ch chan<- prometheus.Metric) { ch <- s.m }

// names returns the fully-qualified names c describes.
func names(c prometheus.Collector) []string {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	var out []string
	for d := range ch {
		// Desc has no accessor for its name; its String form starts
		// `Desc{fqName: "name", ...`.
		s := d.String()
		if _, rest, ok := strings.Cut(s, `fqName: "`); ok {
			if name, _, ok := strings.Cut(rest, `"`); ok {
				out = append(out, name)
			}
		}
	}
	return out
}
