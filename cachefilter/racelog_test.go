package cachefilter

import (
	"fmt"
	"testing"
)

// TestRaceLog: a check covers exactly the invalidations logged after its mark that name the
// entry's key, tag, path prefix or tenant; once the log has dropped invalidations past the mark
// (it is bounded), every check answers covered, the safe answer.
func TestRaceLog(t *testing.T) {
	const tenant, other = "t1", "t2"
	key := func(tn, p string) string { return tn + ":" + p }
	manyKeys := make([]string, 0, 20)
	for i := range 20 {
		manyKeys = append(manyKeys, key(tenant, fmt.Sprintf("k%d", i)))
	}
	tests := []struct {
		name string
		inv  *invalidation
		want bool
	}{
		{"its key", &invalidation{kind: kindKeys, args: []string{key(tenant, "k")}}, true},
		{"another key", &invalidation{kind: kindKeys, args: []string{key(tenant, "j")}}, false},
		{"its key among many (indexed)", &invalidation{kind: kindKeys, args: append(manyKeys, key(tenant, "k"))}, true},
		{"many other keys (indexed)", &invalidation{kind: kindKeys, args: manyKeys}, false},
		{"its tag", &invalidation{kind: kindTag, tenant: tenant, args: []string{"a"}}, true},
		{"its tag in another tenant", &invalidation{kind: kindTag, tenant: other, args: []string{"a"}}, false},
		{"another tag", &invalidation{kind: kindTag, tenant: tenant, args: []string{"c"}}, false},
		{"a prefix of its path", &invalidation{kind: kindPrefix, tenant: tenant, args: []string{"/api/"}}, true},
		{"another prefix", &invalidation{kind: kindPrefix, tenant: tenant, args: []string{"/apx"}}, false},
		{"its tenant", &invalidation{kind: kindTenant, tenant: tenant}, true},
		{"another tenant", &invalidation{kind: kindTenant, tenant: other}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l raceLog
			before := l.mark()
			l.add(tt.inv)
			if got := l.covers(before, tenant, key(tenant, "k"), "/api/x", []string{"a", "b"}); got != tt.want {
				t.Errorf("covers = %v, want %v", got, tt.want)
			}
			if l.covers(l.mark(), tenant, key(tenant, "k"), "/api/x", []string{"a", "b"}) {
				t.Error("covers is true for a mark taken after the invalidation")
			}
		})
	}

	t.Run("bounded", func(t *testing.T) {
		var l raceLog
		old := l.mark()
		l.add(&invalidation{kind: kindKeys, args: []string{key(tenant, "j")}})
		recent := l.mark()
		for i := range raceLogEntries {
			l.add(&invalidation{kind: kindKeys, args: []string{key(other, fmt.Sprint(i))}})
		}
		if n := len(l.entries); n > raceLogEntries {
			t.Errorf("%d entries kept, bound %d", n, raceLogEntries)
		}
		if !l.covers(old, tenant, key(tenant, "k"), "/", nil) {
			t.Error("a mark older than the log reaches is not covered")
		}
		if l.covers(recent, tenant, key(tenant, "k"), "/", nil) {
			t.Error("a mark the log still reaches is covered by other tenants' keys")
		}
		big := make([]string, raceLogKeys)
		for i := range big {
			big[i] = key(other, fmt.Sprint("b", i))
		}
		l.add(&invalidation{kind: kindKeys, args: big})
		l.add(&invalidation{kind: kindKeys, args: big})
		if l.keys > raceLogKeys && len(l.entries) > 1 {
			t.Errorf("%d keys kept in %d entries, bound %d", l.keys, len(l.entries), raceLogKeys)
		}
	})
}
