// Package metrics builds the Prometheus registry a Sluice process exposes on /metrics.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry holding the Go runtime and process collectors
// and a `sluice_build_info` gauge. Components register their own metrics on it.
func NewRegistry(version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "sluice_build_info",
		Help:        "Always 1; the version label says which Sluice build is running.",
		ConstLabels: prometheus.Labels{"version": version},
	})
	info.Set(1)
	reg.MustRegister(info)
	return reg
}

// Registry is what a process registers its metrics on and serves on
// /metrics: the *prometheus.Registry of NewRegistry, or a wrapper of one
// (internal/metricstest's, which tests read series from).
type Registry interface {
	prometheus.Registerer
	prometheus.Gatherer
}

var _ Registry = (*prometheus.Registry)(nil)

// Handler serves reg in the Prometheus text or OpenMetrics format (the latter
// carries native histograms to scrapers that ask for protobuf).
func Handler(reg Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:          reg,
		EnableOpenMetrics: true,
		ErrorHandling:     promhttp.ContinueOnError,
	})
}

// Registration is a set of collectors registered together; Unregister removes
// them, so that a component built again later (a reload, a test) may register
// the same names. The zero value and a nil *Registration are no-ops.
type Registration struct {
	reg        prometheus.Registerer
	registered []prometheus.Collector
}

// RegisterAll registers cs on reg, all or none: on an error the ones already
// registered are removed again. A nil reg registers nothing.
func RegisterAll(reg prometheus.Registerer, cs ...prometheus.Collector) (*Registration, error) {
	r := &Registration{reg: reg}
	if reg == nil {
		return r, nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			r.Unregister()
			return nil, err
		}
		r.registered = append(r.registered, c)
	}
	return r, nil
}

// Unregister removes the collectors RegisterAll registered.
func (r *Registration) Unregister() {
	if r == nil || r.reg == nil {
		return
	}
	for _, c := range r.registered {
		r.reg.Unregister(c)
	}
	r.registered = nil
}
