package limiter_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/internal/metricstest"
	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// TestHotKeys drives two counters past the hot-key threshold, one whose items may move to lease
// mode (LeaseWhenHot) and one exact, then lets them cool: each is reported hot once, the first
// is decided from leases while hot and exactly again once cool, the second exactly throughout,
// and sluice_ratelimit_hot_keys counts them by mode.
func TestHotKeys(t *testing.T) {
	c, p, clk := setup(t)
	reg := metricstest.NewRegistry()
	l, err := limiter.New(c, limiter.Config{Now: clk.Now, Timeout: 5 * time.Second, HotKeyThreshold: 100, LocalCacheSize: -1}, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	limiter.SampleEveryDecision(l)
	leasable := limiter.Item{Key: p + "{hot-lease}", Limit: 1_000_000, Window: time.Minute, Hits: 1, Mode: limiter.LeaseWhenHot}
	exact := limiter.Item{Key: p + "{hot-exact}", Limit: 1_000_000, Window: time.Minute, Hits: 1}
	gauge := func(mode string) float64 {
		t.Helper()
		return reg.Value(t, "sluice_ratelimit_hot_keys", prometheus.Labels{"mode": mode})
	}

	type phase struct {
		name        string
		every       time.Duration // between decisions of each item
		span        time.Duration
		wantLeased  bool // the leasable item is leased by the end
		wantReports int  // NewlyHot results per item in the phase
	}
	phases := []phase{
		{name: "cold: 10 a second", every: 100 * time.Millisecond, span: 2 * time.Second},
		{name: "hot: 1000 a second", every: time.Millisecond, span: 3 * time.Second, wantLeased: true, wantReports: 1},
		{name: "still hot: 60 a second, above half the threshold", every: 16 * time.Millisecond, span: 2 * time.Second, wantLeased: true},
		{name: "cool: 10 a second", every: 100 * time.Millisecond, span: 3 * time.Second},
	}
	for _, ph := range phases {
		reports := map[string]int{}
		var lastLeased bool
		for at := time.Duration(0); at < ph.span; at += ph.every {
			clk.Advance(ph.every)
			res, ok := do(t, l, leasable, exact)
			if !ok {
				t.Fatalf("%s: denied: %+v", ph.name, res)
			}
			if res[1].Leased {
				t.Fatalf("%s: the exact item was leased", ph.name)
			}
			for i, name := range []string{"lease", "exact"} {
				if res[i].NewlyHot {
					reports[name]++
					if res[i].HotRate < 100 {
						t.Errorf("%s: %s reported hot at %v decisions/s, below the threshold", ph.name, name, res[i].HotRate)
					}
				}
			}
			lastLeased = res[0].Leased
		}
		t.Logf("%s: reports %v, leased at the end %v, hot keys lease=%v exact=%v", ph.name, reports, lastLeased, gauge("lease"), gauge("exact"))
		if reports["lease"] != ph.wantReports || reports["exact"] != ph.wantReports {
			t.Errorf("%s: NewlyHot %v, want %d each", ph.name, reports, ph.wantReports)
		}
		if lastLeased != ph.wantLeased {
			t.Errorf("%s: leasable item leased at the end = %v, want %v", ph.name, lastLeased, ph.wantLeased)
		}
		want := 0.0
		if ph.wantLeased {
			want = 1
		}
		if gauge("lease") != want || gauge("exact") != want {
			t.Errorf("%s: hot keys lease=%v exact=%v, want %v each", ph.name, gauge("lease"), gauge("exact"), want)
		}
	}
}
