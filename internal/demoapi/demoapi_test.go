package demoapi

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestAPI(t *testing.T) {
	store := NewMemory(func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) })
	store.Seed("acme")
	api := New(store)
	do := func(method, path, tenant, body string, hdr ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if tenant != "" {
			req.Header.Set("x-sluice-tenant", tenant)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		return rec
	}

	tests := []struct {
		name       string
		method     string
		path       string
		tenant     string
		body       string
		hdr        []string
		wantStatus int
		wantBody   string
		wantHeader map[string]string
	}{
		{name: "list own contacts", method: "GET", path: "/api/v1/contacts", tenant: "acme", wantStatus: 200, wantBody: "Ada Lovelace",
			wantHeader: map[string]string{"Cache-Control": "max-age=30", "Surrogate-Key": "contacts:acme"}},
		{name: "another tenant sees nothing of acme", method: "GET", path: "/api/v1/contacts", tenant: "globex", wantStatus: 200, wantBody: `"contacts":[]`},
		{name: "anonymous", method: "GET", path: "/api/v1/contacts", wantStatus: 200, wantBody: `"tenant":"anonymous"`},
		{name: "get one", method: "GET", path: "/api/v1/contacts/1", tenant: "acme", wantStatus: 200, wantBody: `"id":1`,
			wantHeader: map[string]string{"Surrogate-Key": "contacts:acme contact:acme:1", "Last-Modified": "Fri, 02 Jan 2026 03:04:05 GMT"}},
		{name: "other tenant cannot read it", method: "GET", path: "/api/v1/contacts/1", tenant: "globex", wantStatus: 404},
		{name: "bad id", method: "GET", path: "/api/v1/contacts/x", tenant: "acme", wantStatus: 400},
		{name: "create", method: "POST", path: "/api/v1/contacts", tenant: "acme", body: `{"name":"New Person","email":"n@p"}`, wantStatus: 201,
			wantHeader: map[string]string{"Location": "/api/v1/contacts/6", "Cache-Control": "no-store"}},
		{name: "create rejects junk", method: "POST", path: "/api/v1/contacts", tenant: "acme", body: `{"nam":1}`, wantStatus: 400},
		{name: "create needs a name", method: "POST", path: "/api/v1/contacts", tenant: "acme", body: `{"email":"x"}`, wantStatus: 422},
		{name: "update", method: "PUT", path: "/api/v1/contacts/2", tenant: "acme", body: `{"name":"Grace M. Hopper"}`, wantStatus: 200, wantBody: "Grace M. Hopper"},
		{name: "delete", method: "DELETE", path: "/api/v1/contacts/3", tenant: "acme", wantStatus: 204},
		{name: "deleted is gone", method: "GET", path: "/api/v1/contacts/3", tenant: "acme", wantStatus: 404},
		{name: "stats", method: "GET", path: "/api/v1/dashboard/stats", tenant: "acme", wantStatus: 200, wantBody: `"contacts":5`},
		{name: "method not allowed", method: "DELETE", path: "/api/v1/contacts", tenant: "acme", wantStatus: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(tt.method, tt.path, tt.tenant, tt.body, tt.hdr...)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body.String())
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("body %q lacks %q", rec.Body.String(), tt.wantBody)
			}
			for k, v := range tt.wantHeader {
				if got := rec.Header().Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}

	t.Run("conditional GET", func(t *testing.T) {
		first := do("GET", "/api/v1/contacts/1", "acme", "")
		etag := first.Header().Get("ETag")
		if etag == "" {
			t.Fatal("no ETag")
		}
		if rec := do("GET", "/api/v1/contacts/1", "acme", "", "If-None-Match", etag); rec.Code != 304 || rec.Body.Len() != 0 {
			t.Fatalf("If-None-Match: %d %q", rec.Code, rec.Body.String())
		}
		if rec := do("GET", "/api/v1/contacts/1", "acme", "", "If-None-Match", `"other"`); rec.Code != 200 {
			t.Fatalf("non-matching If-None-Match: %d", rec.Code)
		}
	})
}
