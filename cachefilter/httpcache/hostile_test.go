package httpcache

import (
	"testing"

	"github.com/sluicehq/sluice/internal/header"
)

// TestUnkeyedFields: a request carrying a field applications act on but the
// key lacks (the host or URL they build links from or route, the method
// they run) never gets its response stored, by Storable or by Freshen, so a
// client cannot poison the entry the tenant's other clients get; a method
// override also skips the lookup.
func TestUnkeyedFields(t *testing.T) {
	resp := header.List{{Name: "cache-control", Value: "public, max-age=60"}, {Name: "etag", Value: `"v1"`}, {Name: "date", Value: polDate(0)}}
	stored, ok, _ := Storable(polGet(), 200, resp, polNow, polRoute())
	if !ok {
		t.Fatal("the plain response is not storable")
	}
	tests := []struct {
		field, value string
		lookup       bool
	}{
		{"x-forwarded-host", "evil.example", true},
		{"x-forwarded-server", "evil.example", true},
		{"x-forwarded-scheme", "http", true},
		{"x-forwarded-port", "8443", true},
		{"x-forwarded-prefix", "/evil", true},
		{"x-host", "evil.example", true},
		{"x-original-url", "/admin", true},
		{"x-rewrite-url", "/admin", true},
		{"forwarded", "host=evil.example;proto=http", true},
		{"x-http-method-override", "DELETE", false},
		{"x-http-method", "PUT", false},
		{"x-method-override", "PATCH", false},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			req := polGet(tt.field, tt.value)
			p := CheckRequest(req)
			if p.Store || p.Lookup != tt.lookup || p.Reason != ReasonUnkeyedField {
				t.Errorf("CheckRequest = %+v, want no store, lookup %v, reason %s", p, tt.lookup, ReasonUnkeyedField)
			}
			if _, ok, reason := Storable(req, 200, resp, polNow, polRoute()); ok || reason != ReasonUnkeyedField {
				t.Errorf("Storable = %v %q, want refused as %s", ok, reason, ReasonUnkeyedField)
			}
			notModified := header.List{{Name: "cache-control", Value: "public, max-age=60"}, {Name: "etag", Value: `"v1"`}, {Name: "date", Value: polDate(0)}}
			if fresh, store, reason := Freshen(req, &stored, notModified, polNow, polRoute()); fresh == nil || store || reason != ReasonUnkeyedField {
				t.Errorf("Freshen = %v %v %q, want an entry for this request, not stored (%s)", fresh != nil, store, reason, ReasonUnkeyedField)
			}
		})
	}
}
