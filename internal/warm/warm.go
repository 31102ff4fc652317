// Package warm keeps the hottest cache entries fresh: each round it asks the cache which
// primary keys of each tenant are hot and, for those whose freshness is about to run out,
// re-requests them through the Envoy listener with Cache-Control: no-cache. The cache stage
// then revalidates (or refetches) the entry and stores it again under the same tenant key, so
// clients keep hitting the cache instead of missing when the entry expires.
package warm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/cachefilter"
)

// Defaults of Config.
const (
	// DefaultEnvoyURL is envoy.yaml's internal listener: warming requests
	// carry Sluice's x-sluice-warm marker, which the client-facing listener
	// strips.
	DefaultEnvoyURL       = "http://127.0.0.1:8082"
	DefaultInterval       = 30 * time.Second
	DefaultTopN           = 50
	DefaultConcurrency    = 4
	DefaultEarlyRefresh   = 0.1
	DefaultJitter         = 0.2
	DefaultRequestTimeout = 2 * time.Second
	DefaultTenantHeader   = "x-tenant-id"
	// Header marks warming requests (value "1"), so that logs and stages can tell them apart.
	Header = "x-sluice-warm"
)

// Source reports a tenant's hot entries; *cachefilter.Store is one.
type Source interface {
	HotPaths(ctx context.Context, tenantTag string, n int) ([]cachefilter.HotEntry, error)
}

// Config configures a Warmer. Zero fields take the defaults above.
type Config struct {
	// EnvoyURL is the listener the warming requests go through (scheme and host[:port]):
	// Envoy's internal listener (envoy.yaml), which only Sluice and the worker reach.
	EnvoyURL string
	// Host, when set, is the Host header of warming requests. The cache key includes the
	// authority, and the store does not record it: set Host to the authority clients use
	// when it differs from EnvoyURL's.
	Host string
	// Tenants are the tenant identities to warm (the values of TenantHeader). The store only
	// knows tenant tags (hashes), so the identities must be given.
	Tenants []string
	// TenantHeader carries the tenant identity on warming requests.
	TenantHeader string
	// Interval is the time between rounds (each jittered by ±Jitter/2).
	Interval time.Duration
	// TopN is how many hot keys per tenant are considered each round.
	TopN int
	// Concurrency caps the warming requests in flight.
	Concurrency int
	// EarlyRefresh: an entry is refreshed once the fraction of its freshness lifetime left
	// falls below EarlyRefresh (jittered by ±Jitter relative, per entry, so that replicas do
	// not all refresh at once). 1 or more refreshes every hot entry each round.
	EarlyRefresh float64
	// Jitter is the relative jitter of EarlyRefresh and Interval, in [0, 1).
	Jitter float64
	// RequestTimeout bounds each warming request.
	RequestTimeout time.Duration
	// Client sends the requests; nil uses a client of its own.
	Client *http.Client
	// Templates are paths warmed for the most active tenants each round ("{tenant}" is
	// replaced by the tenant), with a plain GET: a fresh entry is a cheap hit, a missing one
	// is fetched and stored.
	Templates []string
	// ActiveTenants, when set, returns the most active tenants (the worker asks PostgreSQL);
	// they are warmed with Templates and their hot entries, like Tenants. Each round calls it
	// once, with a context that ends after Interval.
	ActiveTenants func(ctx context.Context) ([]string, error)
}

// WithDefaults returns c with its zero fields set to the defaults.
func (c Config) WithDefaults() Config {
	if c.EnvoyURL == "" {
		c.EnvoyURL = DefaultEnvoyURL
	}
	if c.TenantHeader == "" {
		c.TenantHeader = DefaultTenantHeader
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.TopN <= 0 {
		c.TopN = DefaultTopN
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.EarlyRefresh <= 0 {
		c.EarlyRefresh = DefaultEarlyRefresh
	}
	if c.Jitter == 0 {
		c.Jitter = DefaultJitter
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	return c
}

// Results, the values of the result label of sluice_warm_requests_total.
const (
	ResultRefreshed = "refreshed" // the listener answered 2xx or 304
	ResultStatus    = "status"    // another status
	ResultError     = "error"     // no answer (connection error, timeout)
)

// Stats counts one round.
type Stats struct {
	Tenants, Hot, Due, Refreshed, Failed int
}

// Warmer refreshes hot entries. Create it with New and run Run.
type Warmer struct {
	cfg      Config
	base     *url.URL
	src      Source
	log      *slog.Logger
	now      func() time.Time
	client   *http.Client
	ownsHTTP bool
	requests *prometheus.CounterVec
	reg      prometheus.Registerer
}

// New returns a Warmer reading hot entries from src. Its metric is registered on reg unless nil
// (and unregistered by Close). log may be nil.
func New(cfg Config, src Source, reg prometheus.Registerer, log *slog.Logger) (*Warmer, error) {
	cfg = cfg.WithDefaults()
	u, err := url.Parse(cfg.EnvoyURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("warm: envoy URL %q must be an http:// or https:// URL", cfg.EnvoyURL)
	}
	if src == nil {
		return nil, errors.New("warm: nil source")
	}
	if cfg.Jitter < 0 || cfg.Jitter >= 1 {
		return nil, fmt.Errorf("warm: jitter %v outside [0, 1)", cfg.Jitter)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Warmer{cfg: cfg, base: u, src: src, log: log, now: time.Now, client: cfg.Client, reg: reg}
	if w.client == nil {
		w.client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Concurrency}}
		w.ownsHTTP = true
	}
	w.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_warm_requests_total",
		Help: "Cache warming requests sent through the listener, by result (refreshed, status, error).",
	}, []string{"result"})
	for _, r := range []string{ResultRefreshed, ResultStatus, ResultError} {
		w.requests.WithLabelValues(r)
	}
	if reg != nil {
		if err := reg.Register(w.requests); err != nil {
			return nil, fmt.Errorf("warm: register metrics: %w", err)
		}
	}
	return w, nil
}

// Close unregisters the metric and closes idle connections of the Warmer's own client.
func (w *Warmer) Close() {
	if w.reg != nil {
		w.reg.Unregister(w.requests)
	}
	if w.ownsHTTP {
		w.client.CloseIdleConnections()
	}
}

// Run runs a round, then one every Interval (jittered), until ctx ends; it returns nil then.
// A round's failures are logged and counted, never returned.
func (w *Warmer) Run(ctx context.Context) error {
	t := time.NewTimer(w.jitter(w.cfg.Interval) / 2) // replicas started together spread out
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		_, _ = w.Round(ctx)
		t.Reset(w.jitter(w.cfg.Interval))
	}
}

// jitter returns d scaled by a random factor in [1-Jitter/2, 1+Jitter/2).
func (w *Warmer) jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (1 + w.cfg.Jitter*(rand.Float64()-0.5)))
}

// due reports whether an entry with the given freshness is to be refreshed at now.
func (w *Warmer) due(e cachefilter.HotEntry, now time.Time) bool {
	if w.cfg.EarlyRefresh >= 1 || e.Lifetime <= 0 {
		return true
	}
	left := e.FreshUntil.Sub(now)
	threshold := w.cfg.EarlyRefresh * (1 + w.cfg.Jitter*(2*rand.Float64()-1))
	return float64(left) < threshold*float64(e.Lifetime)
}

// Round runs one round: for each tenant, reads its hot entries and refreshes those due, at
// most Concurrency at a time. It returns when every request has finished; the error is the
// first failure to read hot entries (the other tenants are still warmed).
func (w *Warmer) Round(ctx context.Context) (Stats, error) {
	start := time.Now()
	var st Stats
	var firstErr error
	type job struct {
		tenant, path string
		force        bool // revalidate (hot entry near expiry) rather than fill (template)
	}
	var jobs []job
	tenants := w.cfg.Tenants
	if w.cfg.ActiveTenants != nil {
		// Bounded: a database cut off by a partition leaves the query waiting on an open
		// connection (for minutes, until TCP gives up), and the rest of the round needs only
		// Redis and the listener.
		actx, cancel := context.WithTimeout(ctx, w.cfg.Interval)
		active, err := w.cfg.ActiveTenants(actx)
		cancel()
		if err != nil {
			w.log.Warn("warm: active tenants", "err", err)
			firstErr = fmt.Errorf("warm: active tenants: %w", err)
		}
		seen := map[string]bool{}
		for _, t := range tenants {
			seen[t] = true
		}
		tenants = append([]string(nil), tenants...)
		for _, t := range active {
			if t != "" && !seen[t] {
				seen[t] = true
				tenants = append(tenants, t)
			}
		}
		for _, t := range active {
			for _, tpl := range w.cfg.Templates {
				jobs = append(jobs, job{tenant: t, path: strings.ReplaceAll(tpl, "{tenant}", url.PathEscape(t))})
			}
		}
	}
	for _, tenant := range tenants {
		if ctx.Err() != nil {
			break
		}
		st.Tenants++
		hot, err := w.src.HotPaths(ctx, cachefilter.TenantTag(tenant), w.cfg.TopN)
		if err != nil {
			w.log.Warn("warm: read hot keys", "tenant", tenant, "err", err)
			if firstErr == nil {
				firstErr = fmt.Errorf("warm: hot keys of %q: %w", tenant, err)
			}
			continue
		}
		now := w.now()
		st.Hot += len(hot)
		for _, e := range hot {
			if e.Path == "" || !strings.HasPrefix(e.Path, "/") || !w.due(e, now) {
				continue
			}
			jobs = append(jobs, job{tenant: tenant, path: e.Path, force: true})
		}
	}
	// Shuffle, so that replicas running the same round do not walk the keys in step.
	rand.Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })
	st.Due = len(jobs)

	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, w.cfg.Concurrency)
	for _, j := range jobs {
		select {
		case <-ctx.Done():
		case sem <- struct{}{}:
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ok := w.refresh(ctx, j.tenant, j.path, j.force)
			mu.Lock()
			if ok {
				st.Refreshed++
			} else {
				st.Failed++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	w.log.Info("warm: round done", "tenants", st.Tenants, "hot", st.Hot, "due", st.Due,
		"refreshed", st.Refreshed, "failed", st.Failed, "took", time.Since(start).Round(time.Millisecond))
	return st, firstErr
}

// refresh sends one warming request and reports whether it refreshed the entry.
func (w *Warmer) refresh(ctx context.Context, tenant, path string, force bool) bool {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.RequestTimeout)
	defer cancel()
	target := w.base.Scheme + "://" + w.base.Host + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		w.requests.WithLabelValues(ResultError).Inc()
		w.log.Debug("warm: bad path", "tenant", tenant, "path", path, "err", err)
		return false
	}
	if w.cfg.Host != "" {
		req.Host = w.cfg.Host
	}
	if force {
		req.Header.Set("Cache-Control", "no-cache")
	}
	req.Header.Set(Header, "1")
	req.Header.Set(w.cfg.TenantHeader, tenant)
	resp, err := w.client.Do(req)
	if err != nil {
		w.requests.WithLabelValues(ResultError).Inc()
		w.log.Debug("warm: request failed", "tenant", tenant, "path", path, "err", err)
		return false
	}
	// Read the body: the cache stage stores the response as it streams through.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<20))
	resp.Body.Close()
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusNotModified {
		w.requests.WithLabelValues(ResultRefreshed).Inc()
		return true
	}
	w.requests.WithLabelValues(ResultStatus).Inc()
	w.log.Debug("warm: refresh answered", "tenant", tenant, "path", path, "status", resp.StatusCode)
	return false
}

// Requests returns the counter of sluice_warm_requests_total for result.
func (w *Warmer) Requests(result string) prometheus.Counter {
	return w.requests.WithLabelValues(result)
}
