package metricstest_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/metricstest"
)

func TestValue(t *testing.T) {
	reg := metricstest.NewRegistry()
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"a", "b"})
	gauge := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "g"})
	reg.MustRegister(vec, gauge)
	vec.WithLabelValues("1", "2").Add(3)
	gauge.Set(7)
	tests := []struct {
		name   string
		metric string
		labels prometheus.Labels
		want   float64
	}{
		{name: "a vector's series", metric: "x_total", labels: prometheus.Labels{"a": "1", "b": "2"}, want: 3},
		{name: "a series not observed reads 0", metric: "x_total", labels: prometheus.Labels{"a": "9", "b": "9"}, want: 0},
		{name: "a plain gauge", metric: "g", want: 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := reg.Value(t, tt.metric, tt.labels); got != tt.want {
				t.Errorf("Value = %v, want %v", got, tt.want)
			}
		})
	}
	vec.WithLabelValues("1", "3").Add(4)
	vec.WithLabelValues("2", "3").Add(5)
	sums := []struct {
		name   string
		labels prometheus.Labels
		want   float64
	}{
		{name: "every series", want: 12},
		{name: "one label", labels: prometheus.Labels{"a": "1"}, want: 7},
		{name: "no series matches", labels: prometheus.Labels{"a": "7"}, want: 0},
	}
	for _, tt := range sums {
		t.Run("sum "+tt.name, func(t *testing.T) {
			if got := reg.Sum(t, "x_total", tt.labels); got != tt.want {
				t.Errorf("Sum = %v, want %v", got, tt.want)
			}
		})
	}
	if !reg.Unregister(gauge) {
		t.Fatal("Unregister = false")
	}
	if err := reg.Register(gauge); err != nil {
		t.Fatalf("register again after Unregister: %v", err)
	}
}

func TestHistogram(t *testing.T) {
	reg := metricstest.NewRegistry()
	vec := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "h_seconds", Help: "h", NativeHistogramBucketFactor: 1.1}, []string{"route"})
	reg.MustRegister(vec)
	vec.WithLabelValues("a").Observe(2)
	vec.WithLabelValues("a").Observe(3)
	tests := []struct {
		name      string
		route     string
		wantCount uint64
		wantSum   float64
	}{
		{name: "observed", route: "a", wantCount: 2, wantSum: 5},
		{name: "not observed", route: "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := reg.Histogram(t, "h_seconds", prometheus.Labels{"route": tt.route})
			if h.GetSampleCount() != tt.wantCount || h.GetSampleSum() != tt.wantSum {
				t.Errorf("count %d sum %v, want %d %v", h.GetSampleCount(), h.GetSampleSum(), tt.wantCount, tt.wantSum)
			}
		})
	}
}
