package cachefilter

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/sluicehq/sluice/cachefilter/httpcache"
)

// PurgeRequest is the JSON body of POST /cache/purge. Tenant is required
// (the tenant as the identity stage resolves it) and exactly one of the
// others is set:
//
//   - Key: an absolute URL ("http://api.example.com/api/v1/contacts?page=2")
//     whose entry (all variants) is removed, keyed as cfg's routes key it;
//   - Tag: a surrogate key (Surrogate-Key, tag_rules) of the tenant;
//   - Prefix: a path prefix of the tenant's entries ("/api/v1/contacts");
//   - All: every entry of the tenant.
type PurgeRequest struct {
	Tenant string `json:"tenant"`
	Key    string `json:"key,omitempty"`
	Tag    string `json:"tag,omitempty"`
	Prefix string `json:"prefix,omitempty"`
	All    bool   `json:"all,omitempty"`
}

// PurgeHandler serves POST /cache/purge: 200 once the purge is done in
// Redis and acknowledged by every replica, 400 for a bad request, 503 when
// Redis is unavailable or a replica did not acknowledge (the purge may be
// partly applied: retry), 504 when timeout (or the request) ran out first.
func PurgeHandler(cfg Config, store *Store, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var pr PurgeRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&pr); err != nil {
			purgeReply(w, http.StatusBadRequest, "invalid JSON: "+err.Error())
			return
		}
		n := 0
		for _, set := range []bool{pr.Key != "", pr.Tag != "", pr.Prefix != "", pr.All} {
			if set {
				n++
			}
		}
		if pr.Tenant == "" || n != 1 {
			purgeReply(w, http.StatusBadRequest, `need "tenant" and exactly one of "key", "tag", "prefix", "all"`)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		tenant := TenantTag(pr.Tenant)
		var err error
		switch {
		case pr.Key != "":
			u, perr := url.Parse(pr.Key)
			if perr != nil || u.Scheme == "" || u.Host == "" {
				purgeReply(w, http.StatusBadRequest, `"key" must be an absolute URL`)
				return
			}
			path := u.EscapedPath()
			if u.RawQuery != "" {
				path += "?" + u.RawQuery
			}
			req := httpcache.Request{Method: "GET", Scheme: u.Scheme, Authority: u.Host, Path: path, Tenant: pr.Tenant}
			err = store.Invalidate(ctx, PrimaryKey(req, cfg.Route(path)))
		case pr.Tag != "":
			err = store.PurgeTag(ctx, tenant, pr.Tag)
		case pr.Prefix != "":
			err = store.PurgePrefix(ctx, tenant, pr.Prefix)
		default:
			err = store.PurgeTenant(ctx, tenant)
		}
		switch {
		case err == nil:
			purgeReply(w, http.StatusOK, "purged")
		case errors.Is(err, ErrInvalid):
			purgeReply(w, http.StatusBadRequest, err.Error())
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
			purgeReply(w, http.StatusGatewayTimeout, err.Error())
		default: // ErrUnconfirmed, ErrUnavailable, Redis errors
			purgeReply(w, http.StatusServiceUnavailable, err.Error())
		}
	})
}

func purgeReply(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"result": msg})
}
