package cachefilter_test

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluicehq/sluice/cachefilter"
)

// TestStoreConfig decodes YAML, applies defaults and validates.
func TestStoreConfig(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		check   func(c cachefilter.StoreConfig) bool
		wantErr string
	}{
		{
			name: "defaults",
			yaml: "{}",
			check: func(c cachefilter.StoreConfig) bool {
				return c.L1MaxBytes == 64<<20 && c.RedisTimeout == 20*time.Millisecond && *c.L2Enabled &&
					*c.ServeL1WhenRedisDown && c.BreakerFailures == 5 && c.BreakerOpenFor == time.Second &&
					c.SubscriptionLease == time.Second && c.PurgeTimeout == 3*time.Second && c.MaxTTL == 24*time.Hour &&
					c.PassTTL == 10*time.Second && c.PassMaxKeys == 100_000 && c.PresenceSlots == 1<<20
			},
		},
		{
			name: "every field",
			yaml: `
l1_max_bytes: 1048576
redis_timeout: 5ms
l2_enabled: false
stale_retention: 1h
max_ttl: 2h
max_entry_bytes: 65536
max_keys_per_tenant: 10
pubsub_channel: inv
breaker_failures: 3
breaker_open_for: 2s
purge_timeout: 5s
subscription_lease: 500ms
serve_l1_when_redis_down: false
hot_sample_rate: -1
hot_max_keys: 50
hot_half_life: 1m
collapse_timeout: 1s
collapse_max_keys: -1
pass_ttl: -1s
pass_max_keys: 7
presence_slots: -1
`,
			check: func(c cachefilter.StoreConfig) bool {
				return c.L1MaxBytes == 1<<20 && c.RedisTimeout == 5*time.Millisecond && !*c.L2Enabled &&
					c.StaleRetention == time.Hour && c.Channel == "inv" && !*c.ServeL1WhenRedisDown &&
					c.HotSampleRate == -1 && c.CollapseMaxKeys == -1 && c.SubscriptionLease == 500*time.Millisecond &&
					c.PassTTL == -time.Second && c.PassMaxKeys == 7 && c.PresenceSlots == -1
			},
		},
		{name: "negative timeout", yaml: "redis_timeout: -1s", wantErr: "redis_timeout"},
		{name: "lease too short", yaml: "subscription_lease: 10ms", wantErr: "subscription_lease"},
		{name: "huge entries", yaml: "max_entry_bytes: 1073741824", wantErr: "max_entry_bytes"},
		{name: "negative pass_max_keys", yaml: "pass_max_keys: -1", wantErr: "pass_max_keys"},
		{name: "huge presence filter", yaml: "presence_slots: 1000000000", wantErr: "presence_slots"},
		{name: "two errors", yaml: "purge_timeout: -1s\nmax_ttl: -1s", wantErr: "max_ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c cachefilter.StoreConfig
			dec := yaml.NewDecoder(strings.NewReader(tt.yaml))
			dec.KnownFields(true)
			if err := dec.Decode(&c); err != nil {
				t.Fatal(err)
			}
			err := c.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Validate = %v, want an error about %s", err, tt.wantErr)
				}
				if _, err := cachefilter.NewStore(c, cachefilter.StoreOptions{}); err == nil {
					t.Error("NewStore accepted an invalid config")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := c.WithDefaults(); !tt.check(d) {
				t.Errorf("got %+v", d)
			}
		})
	}
}
