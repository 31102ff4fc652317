// Package cachefilter is Sluice's shared HTTP cache: tenant-scoped keys, a
// bounded in-process L1 and a Redis L2 (Store), invalidation that reaches
// every replica, background refresh, and the ext_proc stage that answers
// from it. The RFC 9111 decisions themselves (storability, freshness,
// validation, the headers served) live in cachefilter/httpcache, which this
// package calls for every request.
package cachefilter
