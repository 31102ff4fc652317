package cachefilter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
	sluicemetrics "github.com/sluicehq/sluice/internal/metrics"
)

// Background refresh of entries served stale (stale-while-revalidate, RFC 5861 §3; a request's
// max-stale, RFC 9111 §5.2.1.2).
//
// ext_proc answers or forwards the request in hand; it cannot also send one of its own to the
// origin. So a request that finds its entry stale but servable is answered from the entry at
// once, and the Refresher sends the same request again, in the background, through the Envoy
// listener with "Cache-Control: max-age=0": the cache stage forwards that one with the entry's
// validators and stores what comes back (a 304 freshens the entry), exactly as for a client's
// request. Through the listener, the refresh meets the same filters as the client's request:
// identity (the client's identity fields are sent again), rate limits (it costs the tenant one
// request), routing.

// RefreshConfig configures background refreshes: the `cache.refresh` section.
//
//	refresh:
//	  enabled: true
//	  listener_url: ""     # default: batch.listener_url (sluice dev: its own gateway)
//	  workers: 4
//	  queue: 256
//	  timeout: 30s
type RefreshConfig struct {
	// Enabled turns background refresh on. Default true; false makes the first request that
	// finds an entry stale revalidate it synchronously while others get the stale entry.
	Enabled *bool `yaml:"enabled"`
	// ListenerURL is the Envoy listener refreshes are sent to, http://host:port. Default: the
	// batch section's listener_url.
	ListenerURL string `yaml:"listener_url"`
	// Workers is how many refreshes run at once. Default 4.
	Workers int `yaml:"workers"`
	// Queue bounds the refreshes waiting for a worker; past it a refresh is dropped (counted)
	// and the entry is refreshed by a later request. Default 256.
	Queue int `yaml:"queue"`
	// Timeout bounds one refresh, response body included. Default 30s.
	Timeout time.Duration `yaml:"timeout"`
}

// Defaults of RefreshConfig.
const (
	DefaultRefreshWorkers = 4
	DefaultRefreshQueue   = 256
	DefaultRefreshTimeout = 30 * time.Second
)

// On reports whether background refresh is enabled.
func (c RefreshConfig) On() bool { return c.Enabled == nil || *c.Enabled }

// WithDefaults returns c with every unset field at its default (ListenerURL excepted: the
// caller supplies it).
func (c RefreshConfig) WithDefaults() RefreshConfig {
	if c.Workers == 0 {
		c.Workers = DefaultRefreshWorkers
	}
	if c.Queue == 0 {
		c.Queue = DefaultRefreshQueue
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultRefreshTimeout
	}
	return c
}

// Validate reports every problem of a defaulted c. It changes nothing.
func (c RefreshConfig) Validate() error {
	var errs []error
	if c.Workers < 1 || c.Workers > 256 {
		errs = append(errs, fmt.Errorf("cache: refresh.workers %d must be in [1, 256]", c.Workers))
	}
	if c.Queue < 1 || c.Queue > 1<<16 {
		errs = append(errs, fmt.Errorf("cache: refresh.queue %d must be in [1, 65536]", c.Queue))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("cache: refresh.timeout %v must be positive", c.Timeout))
	}
	if c.ListenerURL != "" {
		if u, err := url.Parse(c.ListenerURL); err != nil || u.Scheme != "http" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			errs = append(errs, fmt.Errorf("cache: refresh.listener_url %q must be http://host:port", c.ListenerURL))
		}
	}
	return errors.Join(errs...)
}

// Refresher sends background refreshes (see above). It is safe for concurrent use; create it
// with NewRefresher and run Run for as long as the stage serves.
type Refresher struct {
	cfg    RefreshConfig
	base   *url.URL
	client *http.Client
	log    *slog.Logger
	queue  chan refreshJob
	done   *prometheus.CounterVec
	reg    *sluicemetrics.Registration

	mu       sync.Mutex // guards inflight
	inflight map[string]bool
}

type refreshJob struct {
	key string
	req httpcache.Request
}

// Results of sluice_cache_refreshes_total.
const (
	refreshOK      = "ok"
	refreshError   = "error"
	refreshDropped = "dropped"
)

// NewRefresher returns a Refresher sending to cfg.ListenerURL (required). Its metric is
// registered on reg unless nil; log may be nil.
func NewRefresher(cfg RefreshConfig, reg prometheus.Registerer, log *slog.Logger) (*Refresher, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ListenerURL == "" {
		return nil, errors.New("cache: refresh needs a listener_url")
	}
	base, _ := url.Parse(strings.TrimSuffix(cfg.ListenerURL, "/"))
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Refresher{
		cfg:  cfg,
		base: base,
		log:  log,
		client: &http.Client{
			Timeout: cfg.Timeout,
			Transport: &http.Transport{
				Proxy:                 nil,
				DialContext:           (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
				DisableCompression:    true,
				MaxIdleConnsPerHost:   cfg.Workers,
				IdleConnTimeout:       30 * time.Second,
				ResponseHeaderTimeout: cfg.Timeout,
			},
			// A 3xx is the refresh's answer, not something to follow.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		queue:    make(chan refreshJob, cfg.Queue),
		inflight: map[string]bool{},
		done: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_cache_refreshes_total",
			Help: "Background refreshes of entries served stale, by result: ok (the listener answered), error, dropped (queue full).",
		}, []string{"result"}),
	}
	for _, res := range []string{refreshOK, refreshError, refreshDropped} {
		r.done.WithLabelValues(res)
	}
	var err error
	if r.reg, err = sluicemetrics.RegisterAll(reg, r.done); err != nil {
		return nil, fmt.Errorf("cache: refresh metrics: %w", err)
	}
	return r, nil
}

// Close unregisters the metric. Run should have returned first.
func (r *Refresher) Close() {
	if r != nil {
		r.reg.Unregister()
	}
}

// Refresh queues a refresh of the entry with key (its variant key) for req, the request that
// found it stale. It reports false when one for key is already queued or running, or the queue
// is full (then the drop is counted): the entry stays stale until a later request refreshes it.
func (r *Refresher) Refresh(key string, req httpcache.Request) bool {
	r.mu.Lock()
	if r.inflight[key] {
		r.mu.Unlock()
		return false
	}
	r.inflight[key] = true
	r.mu.Unlock()
	select {
	case r.queue <- refreshJob{key: key, req: req}:
		return true
	default:
		r.finish(key)
		r.done.WithLabelValues(refreshDropped).Inc()
		return false
	}
}

func (r *Refresher) finish(key string) {
	r.mu.Lock()
	delete(r.inflight, key)
	r.mu.Unlock()
}

// Run sends queued refreshes with cfg.Workers workers until ctx ends, then returns nil once
// they have stopped.
func (r *Refresher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case j := <-r.queue:
					err := r.send(ctx, j.req)
					r.finish(j.key)
					if err != nil {
						r.done.WithLabelValues(refreshError).Inc()
						r.log.Debug("cache refresh failed", "path", j.req.Path, "err", err)
						continue
					}
					r.done.WithLabelValues(refreshOK).Inc()
				}
			}
		})
	}
	wg.Wait()
	r.client.CloseIdleConnections()
	return nil
}

// send sends req again through the listener, forcing validation, and reads the answer.
func (r *Refresher) send(ctx context.Context, req httpcache.Request) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, r.base.String()+req.Path, nil)
	if err != nil {
		return fmt.Errorf("cache: refresh request: %w", err)
	}
	hr.Host = req.Authority
	for _, h := range req.Header {
		if refreshedField(h.Name) {
			hr.Header.Add(h.Name, h.Value)
		}
	}
	// RFC 9111 §5.2.1.1: max-age=0 makes the cache validate its entry with the origin.
	hr.Header.Set("Cache-Control", "max-age=0")
	resp, err := r.client.Do(hr)
	if err != nil {
		return fmt.Errorf("cache: refresh: %w", err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("cache: refresh body: %w", err)
	}
	return nil
}

// refreshedField reports the request fields a refresh sends again: the end-to-end fields of the
// client's request that select or shape the answer (identity, content negotiation, Vary's
// fields), not those Envoy adds or replaces (x-forwarded-*, x-request-id, x-envoy-*), not
// Sluice's own, not the framing, not the client's own caching and conditional fields, which
// the refresh replaces with Cache-Control: max-age=0, and not the unkeyed fields that keep an
// answer from being stored (httpcache.UnkeyedField): the refresh is the clean request the entry answers.
func refreshedField(name string) bool {
	switch {
	case name == "" || name[0] == ':',
		strings.HasPrefix(name, "x-sluice-"), strings.HasPrefix(name, "x-envoy-"), strings.HasPrefix(name, "x-forwarded-"),
		strings.HasPrefix(name, "if-"), httpcache.UnkeyedField(name):
		return false
	}
	switch name {
	case "host", "connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade", "trailer",
		"content-length", "expect", "range", "cache-control", "pragma", "x-request-id", "forwarded":
		return false
	}
	return true
}
