package chaos_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestOriginFailsServesStale: the origin starts answering 503 while the
// cache holds stale entries with stale-if-error (RFC 5861 §4), under
// concurrent load from two tenants. Every request is answered with its own
// tenant's stale entry, none with the 503; once the origin recovers, fresh
// answers come back. Entries with and without a validator are checked: the
// window does not depend on one.
func TestOriginFailsServesStale(t *testing.T) {
	o := newOrigin(t)
	s := startStack(t, o.URL, sharedRedis(t), nil)
	const paths = 10
	variants := []struct {
		name, prefix string
	}{
		{name: "with an ETag", prefix: "/sie/"},
		{name: "without a validator", prefix: "/sie-noetag/"},
	}
	tenants := []string{"umbrella", "probe"} // enterprise: never rate limited here

	for _, tenant := range tenants {
		for _, v := range variants {
			for i := range paths {
				fill(t, s, tenant, fmt.Sprintf("%s%d", v.prefix, i))
			}
		}
	}
	time.Sleep(1100 * time.Millisecond) // max-age=1: every entry is stale now
	failing := time.Now()
	o.failing.Store(true)
	var clients []client
	for _, tenant := range tenants {
		for _, v := range variants {
			clients = append(clients, client{tenant: tenant, path: fixed(v.prefix, paths)})
		}
	}
	l := startLoad(t, s, pace, clients...)
	time.Sleep(1500 * time.Millisecond)
	recovered := time.Now()
	o.failing.Store(false)
	time.Sleep(700 * time.Millisecond)
	rs := l.Stop()

	var figures []string
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			var stale, errors5xx, passedOpen, bare304, other, fresh, afterBad int
			for _, r := range rs {
				if !strings.HasPrefix(r.path, v.prefix) {
					continue
				}
				if r.err != nil || r.wrong() {
					t.Errorf("%s %s: %d, tenant %q path %q, %v", r.tenant, r.path, r.status, r.saw, r.sawPath, r.err)
					continue
				}
				if r.xcache == "" {
					// Sluice sets x-cache on every answer to a request it
					// looked up: without it, the gateway failed open
					// (ext_proc's message_timeout passed on a starved
					// machine) and passed the origin's answer on as it was:
					// a 503, or the 304 to Sluice's revalidation, which the
					// client (who sent no validator) cannot use.
					passedOpen++
					if r.status == http.StatusNotModified {
						bare304++
					}
					continue
				}
				if r.end().After(recovered) {
					// In flight when the origin recovered, or after: a
					// stale or a fresh answer, never an error.
					switch {
					case r.status == http.StatusOK && !strings.HasPrefix(r.xcache, "STALE"):
						fresh++
					case r.status != http.StatusOK:
						afterBad++
						t.Errorf("after recovery: %s %s %d, x-cache %q", r.tenant, r.path, r.status, r.xcache)
					}
					continue
				}
				switch {
				case r.status == http.StatusOK && strings.HasPrefix(r.xcache, "STALE"):
					stale++
				case r.status >= 500:
					errors5xx++
				default:
					other++
				}
			}
			if stale == 0 || errors5xx > 0 || other > 0 {
				for _, r := range rs {
					if strings.HasPrefix(r.path, v.prefix) && r.status == http.StatusOK && r.end().Before(recovered) && !strings.HasPrefix(r.xcache, "STALE") {
						t.Logf("not stale: %s %s x-cache %q at %v after the failure began", r.tenant, r.path, r.xcache, r.start.Sub(failing))
					}
				}
				t.Errorf("origin failing: %d stale, %d 5xx, %d other answers; want only stale ones", stale, errors5xx, other)
			}
			if afterBad > 0 || fresh == 0 {
				t.Errorf("origin recovered: %d fresh answers, %d failed", fresh, afterBad)
			}
			figures = append(figures, fmt.Sprintf("%s: %d stale, %d 5xx, %d fresh after recovery (%d answers passed on by a gateway that failed open, %d of them a bare 304)",
				v.name, stale, errors5xx, fresh, passedOpen, bare304))
		})
	}
	t.Logf("FIGURE: origin 503 for %s under load, %d tenants × %d stale-if-error entries per variant: %s",
		recovered.Sub(failing).Round(100*time.Millisecond), len(tenants), paths, strings.Join(figures, "; "))
}

// fill requests path as tenant until the cache has stored it (the answer is
// a MISS Sluice saw through, or a hit); a try the gateway failed open on
// stores nothing and is repeated.
func fill(t *testing.T, s *stack, tenant, path string) {
	t.Helper()
	for range 5 {
		r := s.get(tenant, path)
		if r.err != nil || r.status != http.StatusOK || r.wrong() {
			t.Fatalf("filling %s %s: %d (tenant %q path %q), %v", tenant, path, r.status, r.saw, r.sawPath, r.err)
		}
		if r.xcache == "MISS" || strings.HasPrefix(r.xcache, "HIT") {
			return
		}
	}
	t.Fatalf("filling %s %s: not stored after 5 tries", tenant, path)
}
