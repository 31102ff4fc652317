// Package ratelimitsvc implements Envoy's rate limit service
// (envoy.service.ratelimit.v3.RateLimitService) over Redis: it reads
// envoyproxy/ratelimit's YAML rules (extended with multiple limits per
// descriptor, arbitrary windows and per-rule algorithms) and answers
// ShouldRateLimit with one Redis round trip.
package ratelimitsvc

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/sluicehq/sluice/ratelimitsvc/limiter"
)

// Limiter checks and charges a set of counters at once. *limiter.Limiter is
// the production implementation; results are index-aligned with items and
// nothing is charged unless allowed.
type Limiter interface {
	Do(ctx context.Context, items []limiter.Item) (results []limiter.Result, allowed bool, err error)
}

var _ Limiter = (*limiter.Limiter)(nil)

// Service answers ShouldRateLimit. Create it with New; it is safe for
// concurrent use, and SetRules may swap the rules while it serves.
type Service struct {
	rlsv3.UnimplementedRateLimitServiceServer

	cfg     Config
	lim     Limiter
	prefix  string // Redis key prefix including the component's "rl:"
	log     *slog.Logger
	metrics *metrics
	rules   atomic.Pointer[Rules]

	logLimit everySecond // degraded-mode warnings: a Redis outage must not flood the log
}

// everySecond allows one event per second. The zero value is ready; safe for
// concurrent use.
type everySecond struct{ last atomic.Int64 }

func (e *everySecond) allow(now time.Time) bool {
	sec := now.Unix()
	last := e.last.Load()
	return last != sec && e.last.CompareAndSwap(last, sec)
}

// New returns a service that counts through lim under Redis keys starting with
// keyPrefix (for example "sluice:"). Rules must be supplied with SetRules
// before the service is ready. reg may be nil.
func New(cfg Config, lim Limiter, keyPrefix string, reg prometheus.Registerer, log *slog.Logger) (*Service, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if lim == nil {
		panic("ratelimitsvc: New with nil Limiter")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, lim: lim, prefix: keyPrefix + "rl:", log: log, metrics: m}, nil
}

// SetRules atomically replaces the rules used by later calls.
func (s *Service) SetRules(r *Rules) {
	s.rules.Store(r)
	s.metrics.rulesChanged()
}

// Rules returns the rules in force, or nil before the first SetRules.
func (s *Service) Rules() *Rules { return s.rules.Load() }

// Ready reports an error until rules have been loaded.
func (s *Service) Ready(context.Context) error {
	if s.rules.Load() == nil {
		return errors.New("rate limit rules not loaded")
	}
	return nil
}

// Errors returned to Envoy for malformed requests (gRPC InvalidArgument).
var (
	ErrNoDomain      = errors.New("ratelimit: domain must not be empty")
	ErrNoDescriptors = errors.New("ratelimit: descriptor list must not be empty")
	errTooMany       = errors.New("ratelimit: too many descriptors")
)

// applied is one limit that a request descriptor is checked against.
type applied struct {
	desc  int    // index of the request descriptor
	limit *Limit // the configured (or overriding) limit
	rule  string // metric label
	item  int    // index into the limiter items, -1 for unlimited
}

// decide runs one ShouldRateLimit. Validation errors are returned as errors;
// Redis failures are not: they become fail-open or fail-closed answers.
func (s *Service) decide(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if req.GetDomain() == "" {
		return nil, ErrNoDomain
	}
	descs := req.GetDescriptors()
	if len(descs) == 0 {
		return nil, ErrNoDescriptors
	}
	if len(descs) > s.cfg.MaxDescriptors {
		return nil, fmt.Errorf("%w: %d descriptors, at most %d", errTooMany, len(descs), s.cfg.MaxDescriptors)
	}
	rules := s.rules.Load()
	resp := &rlsv3.RateLimitResponse{
		OverallCode: rlsv3.RateLimitResponse_OK,
		Statuses:    make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(descs)),
	}
	for i := range resp.Statuses {
		resp.Statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
	}
	if rules == nil {
		return resp, nil
	}
	domain, known := rules.Domain(req.GetDomain())
	if !known {
		return resp, nil
	}

	// RateLimitRequest.hits_addend: "If the value is not set in the message, a
	// request increases the matched limit by 1" (rls.proto); proto3 cannot tell
	// unset from 0, so 0 means 1 here, as in Envoy and envoyproxy/ratelimit.
	reqHits := uint64(req.GetHitsAddend())
	if reqHits == 0 {
		reqHits = 1
	}

	var (
		apps     = make([]applied, 0, 2*len(descs))
		items    = make([]limiter.Item, 0, 2*len(descs))
		replaced map[string]bool
	)
	for i, d := range descs {
		entries := make([]Entry, len(d.GetEntries()))
		for j, e := range d.GetEntries() {
			entries[j] = Entry{Key: e.GetKey(), Value: e.GetValue()}
		}
		// RateLimitDescriptor.hits_addend "will override the request level
		// hits_addend" (ratelimit.proto); an explicit 0 checks without charging.
		hits := reqHits
		if h := d.GetHitsAddend(); h != nil {
			hits = h.GetValue()
		}
		// More hits than any counter holds is over every limit: clamped, it
		// stays a decision (OVER_LIMIT, nothing charged) rather than an item
		// the limiter refuses, which would fail the whole request open as if
		// Redis were down.
		hits = min(hits, limiter.MaxCount)
		limits, counter, ok := s.limitsFor(rules, domain, d, entries)
		if !ok {
			continue
		}
		tag := "" // the counters' hash tag, shared by the descriptor's limits
		for _, l := range limits {
			for _, r := range l.Replaces {
				if replaced == nil {
					replaced = map[string]bool{}
				}
				replaced[r] = true
			}
			// Limit IDs come from the config (name, or descriptor path and
			// index), so the metric label stays bounded whatever clients send.
			a := applied{desc: i, limit: l, rule: l.ID, item: -1}
			if !l.Unlimited {
				if tag == "" {
					tag = s.counterTag(domain.Name, counter)
				}
				a.item = len(items)
				items = append(items, limiter.Item{
					Key:        tag + l.ID,
					Limit:      l.RequestsPerUnit,
					Window:     l.Window,
					Algorithm:  l.Algorithm,
					SubWindows: l.SubWindows,
					Mode:       l.Mode,
					Hits:       hits,
					Refund:     d.GetIsNegativeHits(),
					// A quota_mode limit over its quota refuses the request
					// only with every other quota descriptor (see fill), so
					// the limiter must not deny for it alone.
					Shadow: l.Shadow || l.Quota,
				})
			}
			apps = append(apps, a)
		}
	}
	if len(replaced) > 0 {
		apps, items = dropReplaced(apps, items, replaced)
	}
	if len(apps) == 0 {
		return resp, nil
	}

	var (
		results []limiter.Result
		allowed bool
		err     error
	)
	if len(items) > 0 {
		results, allowed, err = s.lim.Do(ctx, items)
	}
	if err != nil {
		return s.degraded(ctx, resp, domain, apps, err), nil
	}
	for _, a := range apps {
		if a.item >= 0 && results[a.item].NewlyHot {
			s.logHot(ctx, domain.Name, a, descs[a.desc], items[a.item], results[a.item])
		}
	}
	if len(results) > 0 && results[0].FromCache {
		s.readUnanswered(ctx, items, results)
	}
	s.fill(resp, domain.Name, apps, results)
	if allowed && resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
		// Only quota descriptors, all over, deny a request the limiter
		// allowed and charged: give the hits back, so that a denied request
		// consumes no quota here either.
		s.refund(ctx, domain.Name, items)
	}
	if s.cfg.Headers != HeadersOff {
		resp.ResponseHeadersToAdd = s.headers(apps, results, resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT)
	}
	return resp, nil
}

// limitsFor returns the limits for one request descriptor: Envoy's per-descriptor
// `limit` override (RateLimitDescriptor.limit: "rate limit override to supply
// to the ratelimit service") when present, else the configured rules. As in
// envoyproxy/ratelimit, an override applies only within a configured domain.
func (s *Service) limitsFor(rules *Rules, domain *Domain, d *commonrl.RateLimitDescriptor, entries []Entry) ([]*Limit, []Entry, bool) {
	if o := d.GetLimit(); o != nil {
		unit, window, ok := OverrideUnit(o.GetUnit())
		if !ok {
			return nil, nil, false
		}
		// RateLimitOverride.unit_multiplier: unset (or 0) means 1.
		mult := uint32(1)
		if m := o.GetUnitMultiplier(); m != nil && m.GetValue() > 0 {
			mult = m.GetValue()
		}
		// The window is capped as configured limits are (maxWindow): a
		// larger multiplier would overflow time.Duration, and the limiter
		// would refuse the item, failing the whole request open.
		if time.Duration(mult) > maxWindow/window {
			mult = uint32(maxWindow / window)
		}
		l := &Limit{
			ID:              "override:" + strconv.FormatUint(uint64(mult), 10) + unit.String(),
			RequestsPerUnit: uint64(o.GetRequestsPerUnit()),
			Unit:            unit,
			UnitMultiplier:  mult,
			Window:          window * time.Duration(mult),
			Algorithm:       domain.Algorithm,
			Mode:            overrideMode(domain),
			SubWindows:      limiter.DefaultSubWindows,
			override:        true,
		}
		l.finish()
		return []*Limit{l}, entries, true
	}
	m, ok := rules.Match(domain.Name, entries)
	if !ok || len(m.Limits) == 0 {
		return nil, nil, false
	}
	return m.Limits, m.CounterEntries, true
}

// overrideMode is how a descriptor's limit override is decided: as its
// domain's limits are by default.
func overrideMode(d *Domain) limiter.Mode {
	if d.Mode == limiter.Exact && d.HotKeyLease && d.Algorithm == limiter.SlidingWindow {
		return limiter.LeaseWhenHot
	}
	return d.Mode
}

// readUnanswered completes a denial by the limiter's local cache, which
// answers only the counters it knows exhausted and leaves the others' results
// empty: it reads those from Redis without charging, so that every
// descriptor status reports what is left, as envoyproxy/ratelimit's do (it
// reads every counter, local cache or not). Over is then what the refused
// request would have found. The refusal stands whatever happens: the read
// gets half the Redis budget, so that a slow Redis cannot make Envoy's own
// timeout (which fails open) overtake a refusal known locally, and on error
// the results stay empty. A request whose descriptors are all known exhausted
// still costs Redis nothing.
func (s *Service) readUnanswered(ctx context.Context, items []limiter.Item, results []limiter.Result) {
	var (
		idx   []int
		check []limiter.Item
	)
	for i, r := range results {
		if r.Over {
			continue
		}
		it := items[i]
		it.Hits = 0
		idx = append(idx, i)
		check = append(check, it)
	}
	if len(check) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout/2)
	defer cancel()
	read, _, err := s.lim.Do(ctx, check)
	if err != nil {
		return
	}
	for j, i := range idx {
		r := read[j]
		if items[i].Hits > 0 {
			r.Over = r.Used+items[i].Hits > items[i].Limit
		}
		results[i] = r
	}
}

// logHot logs, once per hot spell, a counter decided at or above the hot-key
// threshold: one Redis key, hence one shard, carries all its decisions, however
// many replicas there are. Lease mode takes it off the shard where the rule
// allows it (on_hot_key: lease); otherwise the shard's capacity caps it.
func (s *Service) logHot(ctx context.Context, domain string, a applied, d *commonrl.RateLimitDescriptor, it limiter.Item, r limiter.Result) {
	entries := make([]string, 0, len(d.GetEntries()))
	for _, e := range d.GetEntries() {
		entries = append(entries, e.GetKey()+"="+e.GetValue())
	}
	mode := "exact (the rule does not allow lease mode: set on_hot_key: lease or algorithm: sliding_window_lease)"
	if it.Mode == limiter.LeaseWhenHot {
		mode = "lease (on_hot_key: lease)"
	}
	s.log.WarnContext(ctx, "rate limit: hot key: one Redis key carries this descriptor's decisions (logged once per hot spell; see sluice_ratelimit_hot_keys)",
		"domain", domain, "rule", a.rule, "descriptor", strings.Join(entries, ","), "decisions_per_second", math.Round(r.HotRate), "mode", mode)
}

// refund takes back the hits that items charged. A failure is logged (at
// most once a second) and otherwise ignored: the hits then stay counted until
// their window passes, as in envoyproxy/ratelimit, which always counts them.
func (s *Service) refund(ctx context.Context, domain string, items []limiter.Item) {
	var back []limiter.Item
	for _, it := range items {
		if it.Refund || it.Hits == 0 {
			continue
		}
		it.Refund = true
		back = append(back, it)
	}
	if len(back) == 0 {
		return
	}
	if _, _, err := s.lim.Do(ctx, back); err != nil && s.logLimit.allow(time.Now()) {
		s.log.WarnContext(ctx, "rate limit: could not refund the hits of a request denied by quota_mode descriptors (logged at most once a second)",
			"domain", domain, "err", err)
	}
}

// dropReplaced removes limits named by another matched limit's `replaces`
// (envoyproxy/ratelimit semantics: the replaced limit is not applied to this
// request) and re-indexes items. An unlimited limit stays: envoyproxy reports
// an unlimited descriptor as such even when its name is replaced.
func dropReplaced(apps []applied, items []limiter.Item, replaced map[string]bool) ([]applied, []limiter.Item) {
	var (
		outA []applied
		outI []limiter.Item
	)
	for _, a := range apps {
		if a.item >= 0 && a.limit.Name != "" && replaced[a.limit.Name] {
			continue
		}
		if a.item >= 0 {
			outI = append(outI, items[a.item])
			a.item = len(outI) - 1
		}
		outA = append(outA, a)
	}
	return outA, outI
}

// counterTag is the start of the names of a descriptor's counters in Redis,
// to which each limit appends its ID: the descriptor's identity is hashed
// (SHA-256, 128 bits) into the Cluster hash tag, so every limit of a
// descriptor shares one slot, keys stay short whatever clients send, and no
// value can break out of the tag: "<prefix>rl:{<32 hex digits>}:".
func (s *Service) counterTag(domain string, entries []Entry) string {
	size := 8 + len(domain)
	for _, e := range entries {
		size += 16 + len(e.Key) + len(e.Value)
	}
	var stack [512]byte
	b := stack[:0]
	if size > len(stack) {
		b = make([]byte, 0, size)
	}
	b = binary.BigEndian.AppendUint64(b, uint64(len(domain)))
	b = append(b, domain...)
	for _, e := range entries {
		b = binary.BigEndian.AppendUint64(b, uint64(len(e.Key)))
		b = append(b, e.Key...)
		b = binary.BigEndian.AppendUint64(b, uint64(len(e.Value)))
		b = append(b, e.Value...)
	}
	sum := sha256.Sum256(b)
	var h [32]byte
	hex.Encode(h[:], sum[:16])
	return s.prefix + "{" + string(h[:]) + "}:"
}

// fill turns limiter results into descriptor statuses. A descriptor with
// several limits reports the one that decides: an enforced over-limit one,
// else the one with the least remaining. As in envoyproxy/ratelimit
// (service/ratelimit.go shouldRateLimitWorker), the overall code is
// OVER_LIMIT when a descriptor without quota_mode is over, or when the request
// has quota_mode descriptors and all of them are over; an over-limit status
// reports no quota remaining.
func (s *Service) fill(resp *rlsv3.RateLimitResponse, domain string, apps []applied, results []limiter.Result) {
	best := make([]int, len(resp.Statuses)) // per descriptor: index into apps, -1 none
	for i := range best {
		best[i] = -1
	}
	var quota map[int]bool // quota_mode descriptors: over?
	for ai, a := range apps {
		st := resp.Statuses[a.desc]
		if a.item < 0 {
			// Unlimited, as envoyproxy/ratelimit reports it: OK, no current limit.
			if best[a.desc] < 0 {
				st.LimitRemaining = math.MaxUint32
			}
			s.metrics.decision(domain, a.limit, a.rule, codeOK)
			continue
		}
		r := results[a.item]
		code := s.codeOf(a.limit, r)
		s.metrics.decision(domain, a.limit, a.rule, code)
		if a.limit.Quota {
			if quota == nil {
				quota = map[int]bool{}
			}
			quota[a.desc] = quota[a.desc] || code == codeOver
		}
		if code == codeOver {
			st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			if !a.limit.Quota {
				resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
			}
		}
		if b := best[a.desc]; b < 0 || apps[b].item < 0 || decides(a, r, apps[b], results[apps[b].item]) {
			best[a.desc] = ai
		}
	}
	allOver := len(quota) > 0
	for _, over := range quota {
		allOver = allOver && over
	}
	if allOver {
		resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	for d, ai := range best {
		if ai < 0 || apps[ai].item < 0 {
			continue
		}
		a, r := apps[ai], results[apps[ai].item]
		st := resp.Statuses[d]
		st.CurrentLimit = currentLimit(a.limit)
		st.LimitRemaining = clampU32(r.Remaining)
		if r.Over {
			// A request refused for wanting more hits than remain charges
			// none, so some remain; envoyproxy/ratelimit reports 0 for every
			// over-limit status (limiter/base_limiter.go), and Envoy's
			// x-ratelimit-remaining on the 429 comes from it.
			st.LimitRemaining = 0
		}
		st.DurationUntilReset = durationpb.New(resetAfter(a.limit, r))
	}
}

// resetAfter is when the quota of limit l (result r) next frees, for
// duration_until_reset and the headers. A sliding window with nothing counted
// (a fresh counter, a check, a refused request, a limit of 0) has no hit to
// age out and reports 0: that is then the whole window, the span the limit
// counts over, as envoyproxy/ratelimit reports the rest of its window, never
// 0 (utils.CalculateReset), so that clients refused by a limit of 0 are not
// told to retry at once.
func resetAfter(l *Limit, r limiter.Result) time.Duration {
	if r.ResetAfter > 0 {
		return r.ResetAfter
	}
	return l.Window
}

// decides reports whether limit a (result r) should be the one a descriptor
// status shows instead of b.
func decides(a applied, r limiter.Result, b applied, rb limiter.Result) bool {
	ao, bo := r.Over && !a.limit.Shadow, rb.Over && !b.limit.Shadow
	if ao != bo {
		return ao
	}
	if r.Remaining != rb.Remaining {
		return r.Remaining < rb.Remaining
	}
	return r.ResetAfter > rb.ResetAfter
}

// Decision codes used as the `code` metric label.
const (
	codeOK         = "ok"
	codeNear       = "near_limit"
	codeOver       = "over_limit"
	codeShadow     = "shadow"
	codeFailOpen   = "fail_open"
	codeFailClosed = "fail_closed"
)

func (s *Service) codeOf(l *Limit, r limiter.Result) string {
	switch {
	case r.Over && l.Shadow:
		return codeShadow
	case r.Over:
		return codeOver
	case float64(r.Used) > math.Floor(s.cfg.NearLimitRatio*float64(l.RequestsPerUnit)):
		// Past floor(ratio * limit), as envoyproxy/ratelimit's near-limit
		// threshold (limiter/base_limiter.go checkNearLimitThreshold).
		return codeNear
	}
	return codeOK
}

// degraded answers when Redis could not be consulted: OK (fail open) unless
// the domain or the service is configured to fail closed.
func (s *Service) degraded(ctx context.Context, resp *rlsv3.RateLimitResponse, domain *Domain, apps []applied, err error) *rlsv3.RateLimitResponse {
	deny := s.cfg.FailureModeDeny
	if domain.FailureModeSet {
		deny = domain.FailureModeDeny
	}
	code := codeFailOpen
	if deny {
		code = codeFailClosed
	}
	s.metrics.degradedCall(domain.Name, code)
	if !errors.Is(err, limiter.ErrUnavailable) && s.logLimit.allow(time.Now()) {
		s.log.WarnContext(ctx, "rate limit degraded: redis unavailable (logged at most once a second; see sluice_ratelimit_degraded_total)",
			"domain", domain.Name, "mode", code, "err", err)
	}
	for _, a := range apps {
		if a.item < 0 {
			continue
		}
		st := resp.Statuses[a.desc]
		s.metrics.decision(domain.Name, a.limit, a.rule, code)
		if st.CurrentLimit == nil {
			st.CurrentLimit = currentLimit(a.limit)
			st.LimitRemaining = clampU32(a.limit.RequestsPerUnit)
		}
		if deny && !a.limit.Shadow {
			st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
			st.LimitRemaining = 0
			resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
		}
	}
	return resp
}

// currentLimit is DescriptorStatus.current_limit for l: shared by every
// response (built by Limit.finish), so nothing may modify it.
func currentLimit(l *Limit) *rlsv3.RateLimitResponse_RateLimit { return l.current }

func clampU32(v uint64) uint32 {
	if v > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(v)
}

// ShouldRateLimit implements rlsv3.RateLimitServiceServer.
func (s *Service) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	start := time.Now()
	resp, err := s.decide(ctx, req)
	s.metrics.observe(time.Since(start), err)
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}
