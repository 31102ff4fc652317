package cachefilter

import "time"

// LongestMessageTimeout is the longest override_message_timeout the cache
// stage asks Envoy for (an invalidation after an unsafe request). Envoy
// ignores an override above the ext_proc filter's max_message_timeout, so
// that must be at least this (sluice check-config --envoy checks it).
func LongestMessageTimeout() time.Duration { return max(followerWait, invalidateWait) + extendSlack }
