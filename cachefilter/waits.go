package cachefilter

import "time"

// LongestMessageTimeout is the longest override_message_timeout the cache
// stage asks Envoy for with c: a collapsed follower's wait or an
// invalidation after an unsafe request, plus the slack for Sluice's answer.
// Envoy ignores an override above the ext_proc filter's max_message_timeout,
// so that must be at least this (sluice check-config --envoy checks it).
func (c Config) LongestMessageTimeout() time.Duration {
	return max(c.WithDefaults().CollapseWait, invalidateWait) + extendSlack
}
