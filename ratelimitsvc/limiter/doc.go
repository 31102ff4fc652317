// Package limiter implements sliding- and fixed-window rate limits over Redis, at most one round
// trip per call, and a lease mode that decides most calls without one.
//
// A Limiter's Do takes the limits that apply to one request (Items), checks all of them and
// charges all of them only if none that may deny is over: a denied request consumes no quota.
// On a single Redis this is one Lua script call (script.go) whatever the number of items, shared
// with the calls that arrive meanwhile (see Coalescing), reading the time from the server's TIME
// so sidecar clocks cannot skew windows.
//
// # Fixed window
//
// Windows are aligned to the Unix epoch (start = now - now%window), as in envoyproxy/ratelimit.
// The counter is the string key "<Key>:f:<window ms>:<window start ms>", incremented with INCRBY;
// its TTL, the rest of the window, is set once when the key is created. Up to 2*Limit hits can
// pass within a moment around a window boundary.
//
// # Sliding window
//
// The counter is a string "<Key>:sw:<window ms>:<N>" of 61+29(N+1) bytes of fixed-width
// decimal integers: the newest sub-window charged, the sum of all counts, the oldest counted
// sub-window and the time of its last hit, then a count and a last-admit time for each of N+1
// sub-windows of window/N (a ring). The script reads them with string.sub and tonumber and
// writes them with string.format, so Redis and any Redis-protocol server with plain Lua 5.1
// (sluice dev's embedded miniredis) run the same code. A request is counted against the N most recent
// sub-windows, which lie wholly inside the window, plus the one straddling the window's start,
// counted in full until its last admitted hit has left the window. So:
//
//   - no span of length window ever holds more than Limit admitted hits (tolerance 0; the
//     weighted two-window counter lets up to 2*Limit through against a burst at the end of a
//     window followed by a trickle);
//   - compared with an exact sliding log, quota frees late by at most one sub-window, and not
//     at all for hits that arrived together (a burst leaves exactly one window later).
//
// Measured by TestSlidingAccuracy, which drives simulated traffic through the real script and
// checks every admitted hit against an exact log (window 1m, limit 100, 10 windows of traffic;
// "admitted" is hits admitted as a share of what an exact-log limiter admits on the same
// traffic; "lag" is how long quota stayed taken after an exact log would have freed it, over
// the denials an exact log would have admitted):
//
//	traffic                    N=10 (6s sub-windows)    N=60 (1s)              N=1 (one sub-window)
//	random, 2x the limit       93.1%, lag ≤ 5.8s        100%,  lag ≤ 0.85s     69.3%, lag ≤ 58s
//	random, 10x, 1-3 hits      100%,  lag ≤ 5.4s        100%,  lag ≤ 0.94s     100%,  lag ≤ 4.3s
//	steady at the limit        91.9%, lag ≤ 5.4s        99.1%, lag ≤ 0.6s      50.5%, lag ≤ 59s
//	steady at 1.2x the limit   92.1%, lag ≤ 5.5s        100%,  lag ≤ 0.5s      52.5%, lag ≤ 50s
//	random bursts              100%,  no lag            100%,  no lag          86.7%, lag ≤ 32s
//	bursts at sub-window ends  100%,  no lag            100%,  no lag          95.0%, lag ≤ 6s
//
// Never more than Limit in any window, in every run, and the lag never exceeded one sub-window.
// The default of 10 sub-windows costs up to about 8% of throughput for traffic spread evenly
// around the limit; 60 sub-windows cost under 1% but decode and encode 123 numbers per counter
// instead of 23 (about three times the script time per item, see Cost).
//
// # Coalescing
//
// On a single Redis, Do queues its items as one request and a flusher goroutine sends queued
// requests to Redis together, as one script call: the calls that arrive while a script call is in
// flight go in the next one, sent as soon as it returns (no timer: a call that finds nothing in
// flight is sent at once). A batch holds at most 64 requests and 256 items (one larger request
// goes alone) and only requests with the same clock (Config.Now); one batch is in flight at a
// time, which measured as good as two (bigger batches, fewer system calls on both sides). The
// script decides the requests of a batch one after another, each all-or-nothing on its own,
// against what the requests before it charged, with one TIME for the batch; so a batch is
// equivalent to its requests arriving one by one at the same millisecond. Each caller still waits
// for at most one round trip, and gets its own answer or error:
//
//   - a caller whose context ends stops waiting at once; its request is dropped if still queued,
//     and applied all the same if already sent (its answer is lost, its hits stay charged, as
//     with a caller that gives up on a single call);
//   - a batch's deadline is the earliest of its requests' (Config.Timeout after each Do began),
//     and a request whose deadline passes while it is queued fails with a timeout unsent;
//   - a counter holding a value of another type or format fails only the requests that use it;
//   - the circuit breaker counts a batch as one call;
//   - Close stops taking calls, waits for the queued ones to be answered, then stops the flusher.
//
// On a Redis Cluster, a Do whose items share one hash slot is coalesced the same way, and each
// batch is one pipeline of one script call per slot (go-redis sends each node its share at
// once); lease calls too. A Do spanning several slots goes alone (see Redis Cluster).
//
// # Cost
//
// bench/ratelimit.sh measures the whole path (gRPC, service, limiter, Redis) against a gRPC
// server that answers without Redis, load generator on the same two cores; 32 callers on 1000
// tenants form batches of about 13 requests. docs/ratelimit.md has the figures.
//
// # Redis Cluster
//
// With a *redis.ClusterClient, the items of a Do that span several slots are grouped by the
// hash slot of their {hash tag} and each group is one script call, all sent in one pipeline.
// Each group decides and charges atomically. If one group denies while others charged,
// the others are refunded in a second pipeline at the time they charged at. That is not
// atomic: in between, other requests see the extra hits (and may be denied, never wrongly
// allowed); if the refund fails the hits stay charged until their window passes. If a group
// fails with an error, Do returns the error and the groups that charged keep their charge.
// Give the items of one request the same hash tag (say, the tenant) to keep them atomic.
//
// # Lease mode
//
// An item in Mode Lease (or LeaseWhenHot, once its key is hot) is decided from a lease: hits of
// the counter's quota that Redis charged to this replica in advance and that it admits without
// a round trip. A lease call is one script call on the counter, whose value carries, after the
// ring, the registry of leases: "<replica id>=<hits leased and unused>@<expiry ms>;" per
// replica (one key: nothing more for Redis Cluster, and exact decisions leave it as it is). It
// gives back hits the replica will not use, charges the hits a waiting decision needs if they
// fit in the quota, and leases more:
//
//	leased = min(max(want, floor(C/R)/4) - held, quota left, C - leased by others - held, floor(C/R) - held)
//
// where held is what the replica still holds, want its recent rate times Config.Lease.Horizon
// (a key far below its limit gets at least a quarter of the replica's share, so that it renews
// no more often than one near it),
// C = floor(MaxOvershoot * Limit) the cap on hits leased across replicas, and R the replicas
// holding unexpired leases on the key, itself included. So leases follow each replica's rate,
// replicas share the cap evenly, and an idle replica, which gives its lease back after a
// horizon without decisions, holds nothing and is not counted in R. Leased hits are charged
// when leased, like exact hits, in the same sliding counter: exact and leased decisions of one
// key add up, and a key can move between modes at any moment.
//
// Decisions wait for Redis only when the lease lacks the hits: the first decision of a key, or
// a burst faster than renewal. A lease is renewed in the background when a quarter of the
// target is left or it nears its time (2*Horizon after the replica asked for it; the registry
// entry expires then on Redis's clock, and the replica measures that time on its own monotonic
// clock from before it asked, so it stops first). When Redis reports the quota used up, the
// replica denies locally until quota frees, like the local over-limit cache.
//
// Over-admission bound. Hits admitted in any window of length Window come from hits charged
// within that window, which the sliding counter keeps within Limit as for exact decisions, and
// from leases charged before it and used in it, which were leased and unused at its start: at
// most C. So no window admits more than Limit + C = Limit * (1 + MaxOvershoot), and with R
// replicas each holding a lease of at most L <= floor(C/R) hits the excess is at most R*L.
// TestLeaseOverAdmission checks it in simulated time and TestLeaseRegistryCap that what is
// leased across replicas never exceeds C; bench/ratelimit.sh measures it with three Sluice
// processes at five times a limit.
//
// Faults: a replica that dies loses at most its lease (those hits stay counted until they leave
// the window; its registry entry counts for nothing once expired, so the others get its share
// back within 2*Horizon). With Redis down, decisions go on from the leases until they are used
// up or expire; then Do fails like an exact call, and the caller's failure mode applies.
// Windows, grants and registry expiries are on Redis's clock (the script reads TIME); a
// replica's clock only measures how long it has held a lease. A limit whose cap C is below one
// hit is decided exactly: leasing it would gain nothing.
//
// Unused hits go back to the sub-window that counted them (refunding them from the newest
// sub-window would let older hits leave the window early): a lease keeps the unused hits of
// each grant with its Redis time, uses the oldest first, and gives them back with its next
// lease call when it expires, idles or Close runs. A request denied by another item gives back
// what its leased items took. Results of leased items carry Leased; their Used, Remaining and
// ResetAfter are Redis's figures from the last lease call, less the hits this replica leased
// and has not used.
//
// # Hot keys
//
// Exact decisions (Mode Exact and LeaseWhenHot) are sampled, one in eight, per counter over
// one-second intervals. A counter decided at Config.HotKeyThreshold decisions per second or
// more at this replica is hot until it falls below half of that: one Result says NewlyHot (the
// service logs it once), sluice_ratelimit_hot_keys{mode} counts hot counters, and LeaseWhenHot
// items of a hot sliding-window counter are decided in lease mode. Detection is per replica:
// a key spread over R replicas is hot on the shard at R times the rate each replica sees.

// # Local over-limit cache
//
// When Redis reports a counter exhausted (Remaining 0), the Limiter remembers it until its
// quota next frees (ResetAfter). A later request with such an item (not shadow, not refund) is
// denied without a round trip. Until then Redis would deny it too, unless quota was refunded
// through another Sluice instance, which this one sees only at the reset time.
//
// # Faults
//
// Each Do is bounded by Config.Timeout, retries included; the Redis client must have
// ContextTimeoutEnabled set for that (New checks). A circuit breaker opens after
// Config.BreakerFailures consecutive failures (connection errors, timeouts, LOADING and the
// like; not error replies of a working server, lost script caches or callers giving up), then
// Do fails at once with ErrUnavailable, and after Config.BreakerOpenFor one probe call tests
// Redis again. Envoy's ratelimit filter fails open by default (failure_mode_deny: false), so
// callers usually allow requests on any error.
//
// Metrics (metrics.go): sluice_ratelimit_redis_duration_seconds (one per script call, that is
// per batch), sluice_ratelimit_redis_errors_total{reason}, sluice_ratelimit_local_cache_hits_total,
// sluice_ratelimit_breaker_open, sluice_ratelimit_hot_keys{mode}, sluice_ratelimit_leases and
// sluice_ratelimit_lease_calls_total{reason}.
package limiter
