package chaos_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/internal/config"
	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/db/dbtest"
	"github.com/sluicehq/sluice/internal/faultproxy"
	"github.com/sluicehq/sluice/internal/pgtier"
	"github.com/sluicehq/sluice/internal/redistest"
	"github.com/sluicehq/sluice/internal/warm"
)

// logCount is a slog.Handler that counts records by message. Safe for
// concurrent use.
type logCount struct {
	mu   sync.Mutex // guards msgs
	msgs map[string]int
}

func (h *logCount) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCount) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *logCount) WithGroup(string) slog.Handler            { return h }
func (h *logCount) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.msgs == nil {
		h.msgs = map[string]int{}
	}
	h.msgs[r.Message]++
	return nil
}

func (h *logCount) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msgs[msg]
}

// round is one warming round.
type round struct {
	start time.Time
	took  time.Duration
	stats warm.Stats
	err   error
}

// warmRuns runs warming rounds back to back (50ms apart) until Stop; each
// round is cut off after 10s, so a hung one fails the test instead of
// hanging it.
type warmRuns struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex // guards rounds
	rounds []round
}

func warmLoop(t *testing.T, w *warm.Warmer) *warmRuns {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	wr := &warmRuns{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(wr.done)
		for ctx.Err() == nil {
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			r := round{start: time.Now()}
			r.stats, r.err = w.Round(rctx)
			r.took = time.Since(r.start)
			rcancel()
			wr.mu.Lock()
			wr.rounds = append(wr.rounds, r)
			wr.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { wr.Stop() })
	return wr
}

// Rounds returns the rounds run so far.
func (wr *warmRuns) Rounds() []round {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return slices.Clone(wr.rounds)
}

// Stop ends the loop, waits for the round in progress and returns them all.
func (wr *warmRuns) Stop() []round {
	wr.cancel()
	<-wr.done
	return wr.Rounds()
}

// activeTenants is the worker's query for the most active tenants
// (cmd/sluice activeTenants), through pool.
func activeTenants(pool *pgxpool.Pool) func(context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		rows, err := pool.Query(ctx, `SELECT tenant_id FROM activities
			WHERE created_at > now() - interval '1 day'
			GROUP BY tenant_id ORDER BY count(*) DESC, tenant_id LIMIT 20`)
		if err != nil {
			return nil, fmt.Errorf("active tenants: %w", err)
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
}

// waitTier sends requests as tenant until the origin sees want as its tier,
// and returns when it did.
func waitTier(t *testing.T, s *stack, tenant, want string, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for i := 0; ; i++ {
		r := s.get(tenant, fmt.Sprintf("/n/wait-%d", i))
		if r.status == http.StatusOK && r.tier == want {
			return r.end()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's tier is still %q (status %d, %v) after %v; want %q", tenant, r.tier, r.status, r.err, within, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPostgresDownUnderLoad puts a proxy between Sluice (its tier store)
// and the cache warmer on one side and PostgreSQL on the other, then
// blackholes it (a partition: nothing answers, nothing is closed) and cuts
// it (connections reset, new ones refused), under load through the gateway.
// Tier lookups keep answering the last known tiers, without an error to any
// request; warming rounds keep ending on time, logging the failed query and
// still warming the configured tenants; after the restore, a tier changed
// during the outage is picked up within the listener's reconnect backoff,
// and a change after that by its NOTIFY at once.
func TestPostgresDownUnderLoad(t *testing.T) {
	st := monitorStalls(t)
	ctx := context.Background()
	dbURL := dbtest.New(t)
	direct, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(direct.Close)
	if _, err := db.Migrate(ctx, direct, db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	sql := func(q string) {
		t.Helper()
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := direct.Exec(qctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	sql(`INSERT INTO tenants (id, tier) VALUES ('acme', 'pro'), ('umbrella', 'enterprise'), ('hooli', 'pro');
		INSERT INTO contacts (tenant_id, name) VALUES ('umbrella', 'u');
		INSERT INTO activities (tenant_id, contact_id, kind) SELECT tenant_id, id, 'call' FROM contacts`)

	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	px := faultproxy.Start(t, u.Host)
	u.Host = px.Addr()
	proxied := u.String()

	o := newOrigin(t)
	s := startStack(t, o.URL, sharedRedis(t), func(c *config.Config) {
		c.Database.URL = proxied
		c.Database.ConnectTimeout = time.Second
	})
	waitTier(t, s, "acme", "pro", 5*time.Second)

	// The warmer as `sluice worker` builds it: its own pool, the cache
	// store only for HotPaths, requests through the gateway.
	wdb, err := db.Open(ctx, db.Config{URL: proxied, MaxConns: 2, ConnectTimeout: time.Second}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wdb.Close)
	store, err := cachefilter.NewStore(cachefilter.StoreConfig{}, cachefilter.StoreOptions{Redis: redistest.Client(t), KeyPrefix: s.prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	logs := &logCount{}
	// The rounds run back to back here (warmLoop); Interval only bounds the
	// active-tenants query, as it does in Run.
	const interval = 500 * time.Millisecond
	w, err := warm.New(warm.Config{
		EnvoyURL: s.URL(), Tenants: []string{"acme"}, Templates: []string{"/c/warm-{tenant}"},
		ActiveTenants: activeTenants(wdb.Primary()), Interval: interval, RequestTimeout: interval,
	}, store, nil, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)

	warming := warmLoop(t, w)
	l := startLoad(t, s, 2*pace,
		client{tenant: "acme", path: unique("/n/a-")},
		client{tenant: "umbrella", path: unique("/n/u-")},
		client{tenant: "hooli", path: unique("/n/h-")},
	)
	time.Sleep(500 * time.Millisecond)
	blackholed := time.Now()
	px.Blackhole()
	time.Sleep(2500 * time.Millisecond)
	cut := time.Now()
	px.Cut()
	// Changed while no listener is connected: its NOTIFY is lost, and only
	// the reload after reconnecting can tell Sluice.
	sql(`UPDATE tenants SET tier = 'enterprise' WHERE id = 'hooli'`)
	time.Sleep(1500 * time.Millisecond)
	restored := time.Now()
	if err := px.Restore(); err != nil {
		t.Fatal(err)
	}
	reloadAt := waitTier(t, s, "hooli", "enterprise", 5*time.Second)
	notified := time.Now()
	sql(`UPDATE tenants SET tier = 'pro' WHERE id = 'hooli'`)
	notifyAt := waitTier(t, s, "hooli", "pro", 5*time.Second)
	// Warming recovers too: wait for a clean round that started after the
	// restore.
	var warmAt time.Time
	for deadline := time.Now().Add(5 * time.Second); warmAt.IsZero() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		for _, r := range warming.Rounds() {
			if r.err == nil && !r.start.Before(restored) {
				warmAt = r.start.Add(r.took)
				break
			}
		}
	}
	rs := l.Stop()
	rounds := warming.Stop()
	end := time.Now()

	before := summarize(rs, time.Time{}, blackholed)
	partition := summarize(rs, blackholed, cut)
	outage := summarize(rs, cut, restored)
	after := summarize(rs, restored, end)
	before.check(t, "before")
	partition.check(t, "PostgreSQL blackholed")
	outage.check(t, "PostgreSQL cut")
	after.check(t, "after")
	// Every enriched request carries its tenant's last known tier.
	want := map[string]string{"acme": "pro", "umbrella": "enterprise", "hooli": "pro"}
	wrongTier := 0
	for _, r := range rs {
		if r.status != http.StatusOK || r.saw == "" {
			continue
		}
		ok := r.tier == want[r.tenant]
		if r.tenant == "hooli" && !r.start.Before(restored) {
			ok = r.tier == "pro" || r.tier == "enterprise"
		}
		if !ok {
			wrongTier++
			if wrongTier <= 3 {
				t.Errorf("%s at %v after the blackhole: tier %q, want %q", r.tenant, r.start.Sub(blackholed).Round(time.Millisecond), r.tier, want[r.tenant])
			}
		}
	}

	// Warming: no round hangs on the dead database; rounds during the
	// outage report the failed query and still warm the configured tenant.
	failed, slowest := 0, time.Duration(0)
	for _, r := range rounds {
		if r.start.Before(blackholed) || !r.start.Before(restored) {
			continue
		}
		slowest = max(slowest, r.took)
		if r.err != nil {
			failed++
		}
		if r.stats.Tenants < 1 {
			t.Errorf("round at %v after the blackhole warmed no tenant: %+v, %v", r.start.Sub(blackholed).Round(time.Millisecond), r.stats, r.err)
		}
	}
	if bound := interval + time.Second + st.worst(blackholed, restored); slowest > bound {
		t.Errorf("a warming round took %v with PostgreSQL down; want at most %v (the interval, slack and the worst stall)", slowest, bound)
	}
	if failed == 0 || logs.count("warm: active tenants") == 0 {
		t.Errorf("with PostgreSQL down: %d failed rounds, %d warnings logged; want both", failed, logs.count("warm: active tenants"))
	}
	if warmAt.IsZero() {
		t.Error("no clean warming round within 5s of the restore")
	}

	pickup, notify := reloadAt.Sub(restored), notifyAt.Sub(notified)
	if bound := pgtier.DefaultBackoff + time.Second + st.worst(restored, reloadAt); pickup > bound {
		t.Errorf("the tier changed during the outage was seen %v after the restore; want at most %v (the reconnect backoff, slack and the worst stall)", pickup, bound)
	}
	if bound := time.Second + st.worst(notified, notifyAt); notify > bound {
		t.Errorf("a tier change after the restore took %v to arrive by NOTIFY; want at most %v", notify, bound)
	}
	all := []phase{before, partition, outage, after}
	var n, errs, bad int
	for _, p := range all {
		n, errs, bad = n+p.n, errs+p.errs, bad+p.bad
	}
	t.Logf("FIGURE: postgres blackholed 2.5s then cut 1.5s under load: %d requests, %d errors, %d 5xx, %d wrong tiers; p50/p99 before %s/%s, blackholed %s/%s, cut %s/%s; warming: %d rounds during the outage, %d failed, slowest %s; after restore: missed change picked up in %s, NOTIFY in %s, clean warming round in %s; worst stall of the test process %s",
		n, errs, bad, wrongTier, ms(before.p50), ms(before.p99), ms(partition.p50), ms(partition.p99), ms(outage.p50), ms(outage.p99),
		countRounds(rounds, blackholed, restored), failed, ms(slowest), ms(pickup), ms(notify), ms(warmAt.Sub(restored)), ms(st.worst(time.Time{}, end)))
}

func countRounds(rs []round, from, to time.Time) int {
	n := 0
	for _, r := range rs {
		if !r.start.Before(from) && r.start.Before(to) {
			n++
		}
	}
	return n
}
