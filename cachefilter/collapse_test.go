package cachefilter_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/cachefilter"
	"github.com/sluicehq/sluice/cachefilter/httpcache"
)

// TestCollapse runs 100 concurrent misses of one key: exactly one leader, and the followers get
// what the leader completes with, or are released.
func TestCollapse(t *testing.T) {
	const callers = 100
	tests := []struct {
		name       string
		cfg        cachefilter.StoreConfig
		complete   func(s *cachefilter.Store, key string, e *httpcache.Entry) // the leader, after every caller joined
		followerTO time.Duration                                              // follower context timeout; 0: none
		leaders    int
		served     int // followers that get the entry
	}{
		{
			name:     "leader stores",
			complete: func(s *cachefilter.Store, key string, e *httpcache.Entry) { s.Complete(key, e) },
			leaders:  1, served: callers - 1,
		},
		{
			name:     "leader fails",
			complete: func(s *cachefilter.Store, key string, _ *httpcache.Entry) { s.Complete(key, nil) },
			leaders:  1,
		},
		{
			name:     "leader's stream dies",
			cfg:      cachefilter.StoreConfig{CollapseTimeout: 100 * time.Millisecond},
			complete: func(*cachefilter.Store, string, *httpcache.Entry) {},
			leaders:  1,
		},
		{
			name:       "followers give up",
			cfg:        cachefilter.StoreConfig{CollapseTimeout: 300 * time.Millisecond},
			complete:   func(*cachefilter.Store, string, *httpcache.Entry) {},
			followerTO: 50 * time.Millisecond,
			leaders:    1,
		},
		{
			name:     "collapsing disabled",
			cfg:      cachefilter.StoreConfig{CollapseMaxKeys: -1},
			complete: func(s *cachefilter.Store, key string, e *httpcache.Entry) { s.Complete(key, e) },
			leaders:  callers,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			s := newStore(t, tt.cfg, nil, "", clk, nil)
			key := primaryKey(tenantA, "/hot")
			e := newEntry(clk.Now(), "hot", time.Hour)
			var leaders, served, released atomic.Int64
			var joined, done sync.WaitGroup
			joined.Add(callers)
			start := make(chan struct{})
			for range callers {
				done.Add(1)
				go func() {
					defer done.Done()
					<-start
					leader, wait := s.Collapse(key)
					joined.Done()
					if leader {
						leaders.Add(1)
						joined.Wait()
						tt.complete(s, key, e)
						return
					}
					ctx := context.Background()
					if tt.followerTO > 0 {
						var cancel context.CancelFunc
						ctx, cancel = context.WithTimeout(ctx, tt.followerTO)
						defer cancel()
					}
					if got, ok := wait(ctx); ok && got == e {
						served.Add(1)
					} else if !ok && got == nil {
						released.Add(1)
					} else {
						t.Errorf("wait = %v, %v", got, ok)
					}
				}()
			}
			close(start)
			done.Wait()
			if int(leaders.Load()) != tt.leaders || int(served.Load()) != tt.served ||
				int(served.Load()+released.Load()+leaders.Load()) != callers {
				t.Errorf("leaders %d, served %d, released %d; want %d leaders, %d served",
					leaders.Load(), served.Load(), released.Load(), tt.leaders, tt.served)
			}
			waitFor(t, 2*time.Second, "the flights to end", func() bool { return s.Flights() == 0 })
		})
	}
}

// TestCollapseBounded checks that at most CollapseMaxKeys flights exist: beyond, every caller
// leads, and Close releases every follower.
func TestCollapseBounded(t *testing.T) {
	s := newStore(t, cachefilter.StoreConfig{CollapseMaxKeys: 2}, nil, "", newClock(), nil)
	for i, want := range []bool{true, true, true, false} {
		key := primaryKey(tenantA, "a") // the fourth caller joins the first flight
		if i < 3 {
			key = primaryKey(tenantA, string(rune('a'+i)))
		}
		if leader, _ := s.Collapse(key); leader != want {
			t.Errorf("caller %d: leader = %v, want %v", i, leader, want)
		}
	}
	if n := s.Flights(); n != 2 {
		t.Errorf("%d flights, want 2", n)
	}
	_, wait := s.Collapse(primaryKey(tenantA, "a"))
	go func() { _ = s.Close() }()
	if e, ok := wait(context.Background()); ok || e != nil {
		t.Errorf("after Close: %v, %v; want released", e, ok)
	}
}
