package cachefilter

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
	"github.com/sluicehq/sluice/extproc"
	"github.com/sluicehq/sluice/internal/header"
)

// Stage is the response cache in the ext_proc pipeline (extproc.WithStages).
// It must run after the identity stage, whose Exchange.Tenant is part of
// every key; extproc.New always puts identity first. Per request it follows
// the steps listed in httpcache's package doc:
//
//   - request headers: CheckRequest, Lookup, Evaluate. A fresh hit (or a
//     stale one within stale-while-revalidate while another request
//     refreshes it) is answered with an ImmediateResponse (Envoy sends it
//     through the encoder filters, compressors included); only-if-cached
//     without a usable entry gets a 504. A miss joins the Store's collapse:
//     the leader goes upstream, followers wait (extending Envoy's
//     message_timeout with override_message_timeout when allowed) and are
//     answered from the leader's entry. Validation replaces the client's
//     If-None-Match/If-Modified-Since with the entry's validators.
//   - response headers: a 304 to Sluice's validation freshens the entry and
//     the response is replaced by it (Exchange.ReplaceResponse: a
//     CONTINUE_AND_REPLACE mutation, so the answer still runs through the
//     encoder filters, compressors included); a 5xx is replaced by the stale
//     entry when ServeStaleOnError allows, and so is Envoy's own reply to a
//     failed upstream connection (ServeStaleDisconnected); a storable response asks for its
//     body (mode_override BUFFERED) only when it will be stored; unsafe
//     methods answered 2xx/3xx invalidate (RFC 9111 §4.4) and purge tags.
//   - response body: the entry is stored and the collapse completed.
//   - done: a leader whose stream died releases its followers.
//
// Every Store failure fails open: the request is forwarded or answered as
// if there were no cache. Stage is safe for concurrent use.
type Stage struct {
	cfg     Config
	store   *Store
	log     *slog.Logger
	now     func() time.Time
	refresh Refreshing
}

// StageOptions are a Stage's optional dependencies; the zero value works.
type StageOptions struct {
	// Log receives the stage's warnings; nil discards them.
	Log *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Refresher revalidates entries served stale in the background; nil
	// makes the first request that finds an entry stale revalidate it while
	// the others get the stale entry.
	Refresher Refreshing
}

// Refreshing queues background refreshes; *Refresher implements it.
// Refresh must not block, and reports whether the refresh was queued.
type Refreshing interface {
	Refresh(key string, req httpcache.Request) bool
}

var _ Refreshing = (*Refresher)(nil)

var (
	_ extproc.RequestHeadersHook  = (*Stage)(nil)
	_ extproc.ResponseHeadersHook = (*Stage)(nil)
	_ extproc.ResponseBodyHook    = (*Stage)(nil)
	_ extproc.DoneHook            = (*Stage)(nil)
)

// Waits of the stage, bounded by Envoy's message timeouts. A collapsed
// follower waits Config.CollapseWait.
const (
	// shortWait bounds waits Envoy's message_timeout (default 200 ms) must
	// cover when the timeout could not be extended.
	shortWait = 150 * time.Millisecond
	// invalidateWait bounds an invalidation after an unsafe request, with
	// the message timeout extended to invalidateWait+ExtendSlack.
	invalidateWait = 1500 * time.Millisecond
	extendSlack    = ExtendSlack
)

// NewStage returns the cache stage. cfg is defaulted and validated; store
// must outlive the ext_proc server.
func NewStage(cfg Config, store *Store, opts StageOptions) (*Stage, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("cachefilter: stage needs a store")
	}
	s := &Stage{cfg: cfg, store: store, log: opts.Log, now: opts.Now, refresh: opts.Refresher}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Name implements extproc.Stage.
func (s *Stage) Name() string { return "cache" }

type stateKey struct{}

// state is one request's cache state, kept on the Exchange.
type state struct {
	req     httpcache.Request
	route   RoutePolicy
	primary string
	epoch   uint64 // Store.Epoch of primary before the lookup
	d       httpcache.Decision
	entry   *httpcache.Entry // entry being validated or refreshed, or nil
	layer   Layer

	flight    string           // collapse key this request leads; "" when not a leader
	collapsed bool             // waited for another request's fetch
	unsafe    bool             // unsafe method: invalidate after a 2xx/3xx
	lookup    bool             // the request went through the lookup (cache headers apply)
	pass      bool             // hit-for-pass: no lookup, no collapse (pass.go)
	validate  bool             // forwarded with the entry's validators
	store     bool             // Storable may store the response
	pending   *httpcache.Entry // entry waiting for its body
	body      []byte
}

// RequestHeaders implements extproc.RequestHeadersHook.
func (s *Stage) RequestHeaders(ctx context.Context, x *extproc.Exchange) error {
	route := s.cfg.Route(x.Path)
	if !unsafeMethod(x.Method) && (!route.Enabled || routeOff(ctx)) {
		// Nothing to look up or store (bypass.go); the state is kept for the
		// response's Connection-nominated fields (removeNominated).
		x.Set(stateKey{}, &state{route: route})
		return nil
	}
	now := s.now()
	// The request as the origin will receive it: with the x-sluice-* fields
	// identity set, so that a Vary on them (x-sluice-user: per-user caching)
	// selects what the origin saw, never what the client claimed.
	req := httpcache.Request{
		Method: x.Method, Scheme: x.Scheme, Authority: x.Authority, Path: x.Path,
		Header: x.ForwardedRequestHeaders(), Tenant: x.Tenant, Time: now,
		HasBody: !x.RequestEndOfStream,
	}
	st := &state{req: req, route: route}
	x.Set(stateKey{}, st)
	if unsafeMethod(req.Method) {
		st.unsafe = true
		return nil
	}
	if !st.route.Enabled {
		return nil
	}
	rp := httpcache.CheckRequest(req)
	st.lookup = true
	st.store = rp.Store
	if !rp.Lookup {
		st.d = httpcache.Decision{Action: httpcache.ActionBypass, Fwd: rp.Fwd, Reason: rp.Reason}
		return nil
	}
	st.primary = PrimaryKey(req, st.route)
	// Before anything goes upstream: a response fetched across an invalidation that
	// covers it is not stored (see Store.PutSince).
	st.epoch = s.store.Epoch(st.primary)
	if st.pass = s.store.Passing(st.primary, req.Header, now); st.pass {
		// Hit-for-pass (pass.go): lately not storable. Straight upstream, without the lookup
		// or the collapse; the response is still evaluated, and stored if it now may be.
		st.d = s.passDecision(req, now)
		if st.d.Action == httpcache.ActionGatewayTimeout {
			x.Respond(504, header.List{{Name: "x-cache", Value: httpcache.XCacheMiss}, {Name: "cache-control", Value: "no-store"}}, nil)
		}
		return nil
	}
	e, layer, err := s.store.Lookup(ctx, st.primary, func(vary []string) string {
		return VariantKey(st.primary, vary, req.Header)
	})
	if err != nil {
		s.log.Warn("cache lookup failed; forwarding", "err", err)
		st.lookup, st.store = false, false
		return nil
	}
	st.layer = layer
	st.d = httpcache.Evaluate(req, e, now)
	switch st.d.Action {
	case httpcache.ActionHit:
		s.serve(x, st, e, now)
		return nil
	case httpcache.ActionGatewayTimeout:
		x.Respond(504, header.List{{Name: "x-cache", Value: httpcache.XCacheMiss}, {Name: "cache-control", Value: "no-store"}}, nil)
		return nil
	case httpcache.ActionStale:
		if s.refresh != nil {
			// Served stale now; the refresher sends the request again in
			// the background, forcing validation (refresh.go).
			s.serve(x, st, e, now)
			s.refresh.Refresh(VariantKey(st.primary, e.Vary, req.Header), req)
			return nil
		}
		// Without a refresher one request refreshes (the collapse leader,
		// forwarded with the entry's validators); the others are served the
		// stale entry now.
		if st.store {
			if leader, _ := s.join(st); leader {
				st.entry = e
				s.revalidate(x, st)
				return nil
			}
		}
		s.serve(x, st, e, now)
		return nil
	case httpcache.ActionValidate:
		st.entry = e
	}
	if !st.store {
		if st.entry != nil {
			s.revalidate(x, st)
		}
		return nil
	}
	if leader, wait := s.join(st); !leader && s.follow(ctx, x, st, wait) {
		return nil
	}
	if st.entry != nil {
		s.revalidate(x, st)
	}
	return nil
}

// join joins the collapse of st's primary key and reports whether st leads
// it. Followers of different Vary variants share a flight and check the
// leader's entry against their own variant (follow).
func (s *Stage) join(st *state) (bool, func(context.Context) (*httpcache.Entry, bool)) {
	leader, wait := s.store.Collapse(st.primary)
	if leader {
		st.flight = st.primary
	}
	return leader, wait
}

// follow waits for the leader of st's flight and serves its entry when it
// answers this request; it reports whether it did.
func (s *Stage) follow(ctx context.Context, x *extproc.Exchange, st *state, wait func(context.Context) (*httpcache.Entry, bool)) bool {
	// As long as Envoy lets Sluice take (max_message_timeout, checked by
	// Config.CheckEnvoy); past it the follower goes upstream itself.
	limit := shortWait
	if x.ExtendMessageTimeout(s.cfg.CollapseWait + extendSlack) {
		limit = s.cfg.CollapseWait
	}
	wctx, cancel := context.WithTimeout(ctx, limit)
	e, ok := wait(wctx)
	cancel()
	st.collapsed = true
	if !ok || e == nil {
		return false
	}
	if len(e.Vary) > 0 {
		// The leader's variant may not be this request's: look it up again.
		var err error
		e, _, err = s.store.Lookup(ctx, st.primary, func(vary []string) string {
			return VariantKey(st.primary, vary, st.req.Header)
		})
		if err != nil || e == nil {
			return false
		}
	}
	now := s.now()
	d := httpcache.Evaluate(st.req, e, now)
	if !d.Serves() {
		return false
	}
	st.d, st.layer = d, L1
	s.serve(x, st, e, now)
	return true
}

// revalidate forwards the request with e's validators instead of the
// client's (ConditionalHeaders).
func (s *Stage) revalidate(x *extproc.Exchange, st *state) {
	cond := httpcache.ConditionalHeaders(st.entry)
	if len(cond) == 0 {
		// Nothing to validate with: an ordinary fetch. The entry stays in st
		// for a 5xx answer, which its stale-if-error window may replace
		// (RFC 5861 §4 asks for no validator).
		return
	}
	for _, name := range httpcache.ConditionalFields {
		x.RemoveRequestHeader(name)
	}
	for _, h := range cond {
		x.SetRequestHeader(h.Name, h.Value)
	}
	st.validate = true
}

// serve answers from e with the decision in st.d.
func (s *Stage) serve(x *extproc.Exchange, st *state, e *httpcache.Entry, now time.Time) {
	cs, _ := st.d.CacheStatus()
	cs.Collapsed = st.collapsed
	result := st.d.XCache()
	s.respond(x, st, e, now, st.d.Status, cs, httpcache.XCacheValue(result, layerName(st.layer)))
}

// respond answers from e at the request headers: an ImmediateResponse, which
// Envoy sends through every encoder filter (sendLocalReplyViaFilterChain).
// A HEAD gets the body too: Envoy sends none for HEAD, but an empty local
// reply would lose Content-Type and Content-Length (Utility::
// prepareLocalReply), which a HEAD answer must keep.
func (s *Stage) respond(x *extproc.Exchange, st *state, e *httpcache.Entry, now time.Time, status int, cs httpcache.CacheStatus, xcache string) {
	status, h, body := s.answer(st, e, now, status, cs, xcache)
	x.Respond(status, h, body)
}

// answer is the status, fields and body an answer from e gets: e's, or a
// byte range of it for a Range request (ranges.go), or none for a 304.
func (s *Stage) answer(st *state, e *httpcache.Entry, now time.Time, status int, cs httpcache.CacheStatus, xcache string) (int, header.List, []byte) {
	body := e.Body
	var contentRange string
	switch {
	case status == 304 || status == 204:
		body = nil
	case status == e.Status && st.req.Header.Has("range"):
		if ra := httpcache.AnswerRange(st.req, e, now); ra.Status != 0 {
			status, body, contentRange = ra.Status, ra.Body, ra.ContentRange
		}
	}
	h := httpcache.ServeHeaders(e, now, status, cs, xcache)
	// Envoy frames a local reply's body itself.
	h.Del("content-length")
	h.Del("transfer-encoding")
	if contentRange != "" {
		h = append(h, header.Field{Name: "content-range", Value: contentRange})
	}
	return status, h, body
}

// replace answers from e at the response headers: the upstream response (a
// 304, a 5xx, Envoy's own reply to a failed connection) becomes e's, as a
// mutation that travels the rest of the encoder chain (Exchange.
// ReplaceResponse). The fields the ratelimit filter added stay.
func (s *Stage) replace(x *extproc.Exchange, st *state, e *httpcache.Entry, now time.Time, status int, cs httpcache.CacheStatus, xcache string) {
	status, h, body := s.answer(st, e, now, status, cs, xcache)
	switch {
	case status == 304 || status == 204:
	case st.req.Method == "HEAD":
		// No body (Envoy would send none), and the length a GET would get.
		h = append(h, header.Field{Name: "content-length", Value: strconv.Itoa(len(body))})
		body = nil
	case body == nil:
		body = []byte{} // replaces whatever body the upstream response has
	}
	x.ReplaceResponse(extproc.Replacement{Status: status, Headers: h, Body: body, Keep: rateLimitField, Optional: informational})
}

// servable reports whether e, answered from the cache with the fields
// Sluice adds (age, cache-status, x-cache) and the framing Envoy gives a
// local reply, stays within Envoy's response header limits. Past them an
// ImmediateResponse loses every field (MutationUtils::
// responseHeaderSizeCheck refuses the whole set) and a replacement is a 500,
// so such a response is passed, never stored.
func servable(x *extproc.Exchange, e *httpcache.Entry) bool {
	const addedFields, addedBytes = 5, 256
	fields, bytes := x.ResponseHeaderLimits()
	return (fields == 0 || len(e.Header)+addedFields <= fields) && (bytes == 0 || e.Header.ByteSize()+addedBytes <= bytes)
}

// informational reports the fields of an answer that only inform the client
// (RFC 9211 Cache-Status, x-cache), which give way when an answer would not
// fit Envoy's response header limits.
func informational(name string) bool {
	return name == "cache-status" || name == "x-cache"
}

// rateLimitField reports the response fields of Envoy's ratelimit filter
// (RateLimit, RateLimit-Policy, the older RateLimit-*, X-RateLimit-*): they
// describe the caller's quota and stay on a replaced response.
func rateLimitField(name string) bool {
	return strings.HasPrefix(name, "ratelimit") || strings.HasPrefix(name, "x-ratelimit-")
}

// layerName is the layer as x-cache names it ("HIT-L1"), "" for Miss.
func layerName(l Layer) string {
	switch l {
	case Miss:
		return ""
	case L1:
		return "L1"
	case L2:
		return "L2"
	}
	return strings.ToUpper(l.String())
}

// ResponseHeaders implements extproc.ResponseHeadersHook.
func (s *Stage) ResponseHeaders(ctx context.Context, x *extproc.Exchange) error {
	st, _ := x.Get(stateKey{}).(*state)
	if st == nil {
		return nil
	}
	status := x.ResponseStatus
	hdr := x.ResponseHeaders
	removeNominated(x, hdr)
	if st.unsafe {
		s.invalidate(ctx, x, st, status, hdr)
		return nil
	}
	if !st.lookup {
		return nil
	}
	now := s.now()
	cs, _ := st.d.CacheStatus()
	cs.FwdStatus, cs.Collapsed = status, st.collapsed

	if st.validate && status == 304 {
		e, store := st.entry, false
		if fresh, ok, _ := httpcache.Freshen(st.req, st.entry, hdr, now, st.route.Policy); fresh != nil {
			e, store = fresh, ok && s.store.keeps(fresh, now)
			if store {
				s.put(ctx, st, fresh)
			}
			s.complete(st, fresh)
		} else {
			// The 304 names another validator than the one Sluice sent: it
			// must not update the entry (RFC 9111 §4.3.4), but it says the
			// representation Sluice asked about is current. Answer from the
			// entry as it is: passing the 304 on would give one to a client
			// that did not ask conditionally (RFC 9110 §15.4.5).
			s.complete(st, nil)
		}
		code := e.Status
		if httpcache.NotModified(st.req, e, now) {
			code = 304
		}
		cs.Stored, cs.TTL, cs.HasTTL = store, e.Lifetime-e.Age(now), true
		s.replace(x, st, e, now, code, cs, httpcache.XCacheRevalidated)
		return nil
	}
	if st.entry != nil && status >= 500 {
		disconnected := Disconnected(status, hdr)
		if disconnected && httpcache.ServeStaleDisconnected(st.req, st.entry, now) || httpcache.ServeStaleOnError(st.req, st.entry, now, status) {
			s.complete(st, nil)
			// Not a "hit": the request went upstream (RFC 9211 §2.1); fwd and
			// fwd-status say the stored response stood in for the 5xx, or
			// detail that no response came.
			cs = httpcache.CacheStatus{Fwd: httpcache.FwdStale, FwdStatus: status, TTL: st.entry.Lifetime - st.entry.Age(now), HasTTL: true}
			if disconnected {
				cs.FwdStatus, cs.Detail = 0, "origin unreachable"
			}
			code := st.entry.Status
			if httpcache.NotModified(st.req, st.entry, now) {
				code = 304
			}
			s.replace(x, st, st.entry, now, code, cs, httpcache.XCacheValue(httpcache.XCacheStale, layerName(st.layer)))
			return nil
		}
	}
	if st.store {
		// Only what the store will keep is buffered and reported stored.
		e, ok, _ := httpcache.Storable(st.req, status, hdr, now, st.route.Policy)
		if !ok || !s.store.keeps(&e, now) || !servable(x, &e) {
			s.markPass(st, status, hdr, now)
		} else {
			n := httpcache.ContentLength(hdr)
			if status == 204 {
				// RFC 9110 §15.3.5: a 204 ends with its header section.
				// Envoy sends it with end_of_stream on the headers and no
				// body message follows, Content-Length or not.
				n = 0
			}
			switch {
			case n == 0:
				// No body will follow (Envoy sends no body message for it).
				s.put(ctx, st, &e)
				s.complete(st, &e)
				cs.Stored = true
			case n > 0 && (st.route.MaxObjectBytes == 0 || n <= int64(st.route.MaxObjectBytes)):
				x.WantResponseBody(extproc.BodyBuffered)
				st.pending = &e
				cs.Stored = true
			case n < 0:
				// Unknown length: BUFFERED_PARTIAL, because an oversize
				// BUFFERED response body is a 500 in Envoy while a partial
				// buffer is sent as it is (end_of_stream false) and the
				// rest passes through; such a body is then not stored.
				x.WantResponseBody(extproc.BodyBufferedPartial)
				st.pending = &e
			default:
				s.markPass(st, status, hdr, now) // larger than the route's max_object_bytes
			}
		}
	}
	if st.pending == nil {
		s.complete(st, nil)
	}
	xcache := st.d.XCache()
	if st.d.Action == httpcache.ActionStale || st.d.Action == httpcache.ActionValidate {
		xcache = httpcache.XCacheMiss
	}
	x.SetResponseHeader("cache-status", httpcache.AppendCacheStatus(strings.Join(x.ResponseHeaders.Values("cache-status"), ", "), cs))
	x.SetResponseHeader("x-cache", xcache)
	return nil
}

// removeNominated removes the response fields the upstream's Connection
// field nominates. RFC 9110 §7.6.1: a proxy MUST remove them before
// forwarding. Envoy removes Connection itself, Keep-Alive, Proxy-Connection,
// Transfer-Encoding and Upgrade after the encoder filters ran, but not the
// fields Connection nominates
// (ConnectionManagerUtility::mutateResponseHeaders), so without this they
// would reach the client on misses and pass-through responses (cached hits
// never carry them: storedField). Removing Connection here would hide the
// nominations from Envoy's own handling, so it is left to Envoy.
func removeNominated(x *extproc.Exchange, hdr header.List) {
	for _, name := range httpcache.ConnectionFields(hdr) {
		switch name {
		case "close", "keep-alive", "upgrade", "connection", "transfer-encoding", "proxy-connection":
			continue // not a field (close) or one Envoy removes
		}
		if hdr.Has(name) {
			x.RemoveResponseHeader(name)
		}
	}
}

// ResponseBody implements extproc.ResponseBodyHook.
func (s *Stage) ResponseBody(ctx context.Context, x *extproc.Exchange, body []byte, endOfStream bool) error {
	st, _ := x.Get(stateKey{}).(*state)
	if st == nil || st.pending == nil {
		return nil
	}
	if max := st.route.MaxObjectBytes; max > 0 && len(st.body)+len(body) > max {
		st.pending, st.body = nil, nil
		s.complete(st, nil)
		return nil
	}
	st.body = append(st.body, body...)
	if !endOfStream {
		if x.ResponseBodyMode() == extproc.BodyBufferedPartial {
			st.pending, st.body = nil, nil // Envoy's buffer filled: incomplete
			s.complete(st, nil)
		}
		return nil
	}
	e := st.pending
	st.pending = nil
	e.Body, st.body = st.body, nil
	s.put(ctx, st, e)
	s.complete(st, e)
	return nil
}

// Done implements extproc.DoneHook: a leader that never completed (the
// stream died, the body never came) releases its followers.
func (s *Stage) Done(_ context.Context, x *extproc.Exchange) {
	if st, _ := x.Get(stateKey{}).(*state); st != nil {
		s.complete(st, nil)
	}
}

func (s *Stage) put(ctx context.Context, st *state, e *httpcache.Entry) {
	variant := VariantKey(st.primary, e.Vary, st.req.Header)
	if err := s.store.PutSince(ctx, st.epoch, st.primary, variant, st.req.Path, e); err != nil {
		s.log.Warn("cache put failed", "err", err)
	}
}

// complete ends st's flight once, handing e (nil: go upstream) to followers.
func (s *Stage) complete(st *state, e *httpcache.Entry) {
	if st.flight == "" {
		return
	}
	s.store.Complete(st.flight, e)
	st.flight = ""
}

// invalidate runs RFC 9111 §4.4 and the tag rules after an unsafe request,
// before the response goes on, so the client's next read sees the change.
// Failures are logged; the response is never held back by them.
func (s *Stage) invalidate(ctx context.Context, x *extproc.Exchange, st *state, status int, hdr header.List) {
	keys := s.cfg.Invalidations(st.req, status, hdr)
	tags := s.cfg.PurgeTags(st.req, status)
	if len(keys) == 0 && len(tags) == 0 {
		return
	}
	limit := shortWait
	if x.ExtendMessageTimeout(invalidateWait + extendSlack) {
		limit = invalidateWait
	}
	ictx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if err := s.store.Invalidate(ictx, keys...); err != nil {
		s.log.Warn("cache invalidation failed", "tenant", st.req.Tenant, "err", err)
	}
	tenant := TenantTag(st.req.Tenant)
	for _, tag := range tags {
		if err := s.store.PurgeTag(ictx, tenant, tag); err != nil {
			s.log.Warn("cache tag purge failed", "tenant", st.req.Tenant, "tag", tag, "err", err)
		}
	}
}
