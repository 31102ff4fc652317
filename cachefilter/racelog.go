package cachefilter

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// raceLog remembers the invalidations this replica applied lately (its own and those received
// from other replicas), each under a sequence number, so that a response fetched across one of
// them is not stored when — and only when — that invalidation covers it: its primary key, a tag
// it carries, a prefix of its path, or its whole tenant. A guard on the whole tenant would be
// simpler, but in a busy tenant some write is always in flight, and it would store almost
// nothing (issue 13).
//
// The log is bounded: at most raceLogEntries invalidations and raceLogKeys primary keys in
// them. A check reaching back past what was dropped answers "covered" (the safe answer: a
// miss, never an old version), which needs a fetch to outlast thousands of invalidations.
//
// It is safe for concurrent use; the zero value is empty and ready.
type raceLog struct {
	seq     atomic.Uint64 // sequence number of the last invalidation added; written under mu
	mu      sync.Mutex    // guards the fields below
	entries []raceEntry
	keys    int    // primary keys held by entries
	dropped uint64 // highest sequence number dropped from the log
}

// raceEntry is one logged invalidation.
type raceEntry struct {
	seq  uint64
	inv  *invalidation
	keys map[string]struct{} // kindKeys with many keys: an index of inv.args
}

// Bounds of the race log.
const (
	raceLogEntries = 8192
	raceLogKeys    = 1 << 16
	// raceIndexFrom is the key count from which a key invalidation is indexed in a map.
	raceIndexFrom = 8
)

// mark returns the sequence number of the last invalidation logged: what a fetch records
// before it starts.
func (l *raceLog) mark() uint64 { return l.seq.Load() }

// add logs inv. Call it before the invalidation removes anything, so that whatever is stored
// after the removal finds it here.
func (l *raceLog) add(inv *invalidation) {
	e := raceEntry{inv: inv}
	n := 0
	if inv.kind == kindKeys {
		n = len(inv.args)
		if n >= raceIndexFrom {
			e.keys = make(map[string]struct{}, n)
			for _, k := range inv.args {
				e.keys[k] = struct{}{}
			}
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e.seq = l.seq.Load() + 1
	l.seq.Store(e.seq)
	l.entries = append(l.entries, e)
	l.keys += n
	drop := 0
	for len(l.entries)-drop > raceLogEntries || (l.keys > raceLogKeys && drop < len(l.entries)-1) {
		old := l.entries[drop]
		if old.inv.kind == kindKeys {
			l.keys -= len(old.inv.args)
		}
		l.dropped = old.seq
		drop++
	}
	if drop > 0 {
		clear(l.entries[:drop])
		l.entries = l.entries[drop:]
		if cap(l.entries) > 2*raceLogEntries {
			l.entries = slices.Clone(l.entries)
		}
	}
}

// covers reports whether an invalidation logged after since covers the entry of primary
// (tenant's, stored for path, with tags), or whether the log no longer reaches back to since.
func (l *raceLog) covers(since uint64, tenant, primary, path string, tags []string) bool {
	if since == l.seq.Load() {
		return false // nothing logged since: the common case, without the lock
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if since < l.dropped {
		return true
	}
	// Newest first: a covering invalidation is most likely recent.
	for i := len(l.entries) - 1; i >= 0 && l.entries[i].seq > since; i-- {
		if l.entries[i].covers(tenant, primary, path, tags) {
			return true
		}
	}
	return false
}

func (e *raceEntry) covers(tenant, primary, path string, tags []string) bool {
	inv := e.inv
	switch inv.kind {
	case kindKeys:
		if e.keys != nil {
			_, ok := e.keys[primary]
			return ok
		}
		return slices.Contains(inv.args, primary)
	case kindTag:
		return inv.tenant == tenant && slices.Contains(tags, inv.args[0])
	case kindPrefix:
		return inv.tenant == tenant && strings.HasPrefix(path, inv.args[0])
	case kindTenant:
		return inv.tenant == tenant
	}
	return true // unknown kind: the safe answer
}
