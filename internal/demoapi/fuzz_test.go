package demoapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzContactBody sends arbitrary bodies to the demo API's endpoints that
// read JSON (create, replace, patch), as any tenant, and checks every answer
// is a JSON document with a 2xx/4xx status (no 5xx, no panic), a stored
// contact keeps the documented bounds, and a write never changes another
// tenant's contacts.
//
// Seeds: testdata/fuzz/FuzzContactBody, plus the bodies below.
func FuzzContactBody(f *testing.F) {
	for _, b := range []string{
		`{"name":"Ada","email":"ada@example.com"}`,
		`{"name":"  ","email":""}`,
		`{"name":"x","extra":1}`,
		`{"name":"x"} {"name":"y"}`,
		`{"name":` + strings.Repeat("[", 10000),
		`{"name":"\u0000\ud800","email":"` + strings.Repeat("e", 300) + `"}`,
		`{"id":-1,"name":"x","updated_at":"not a time"}`,
		`null`,
	} {
		f.Add(uint8(0), "acme", []byte(b))
	}
	f.Fuzz(func(t *testing.T, op uint8, tenant string, body []byte) {
		store := NewMemory(func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) })
		store.Seed("acme", "globex")
		api := New(store)
		other := "globex"
		if tenant == "globex" {
			other = "acme"
		}
		list := func() string {
			req := httptest.NewRequest("GET", "/api/v1/contacts", nil)
			req.Header.Set("x-sluice-tenant", other)
			rec := httptest.NewRecorder()
			api.ServeHTTP(rec, req)
			return rec.Body.String()
		}
		before := list()
		method, path := "POST", "/api/v1/contacts"
		switch op % 3 {
		case 1:
			method, path = "PUT", "/api/v1/contacts/1"
		case 2:
			method, path = "PATCH", "/api/v1/contacts/1"
		}
		req := httptest.NewRequest(method, path, strings.NewReader(string(body)))
		req.Header.Set("x-sluice-tenant", tenant)
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		if rec.Code >= 500 || rec.Code < 200 {
			t.Fatalf("%s %s: status %d: %s", method, path, rec.Code, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s: %d with a body that is not JSON: %q", method, path, rec.Code, rec.Body)
		}
		if after := list(); after != before {
			t.Fatalf("%s %s as %q changed %s's contacts:\n%s\n%s", method, path, tenant, other, before, after)
		}
		if rec.Code != http.StatusOK && rec.Code != http.StatusCreated {
			return
		}
		var c Contact
		if err := json.Unmarshal(rec.Body.Bytes(), &c); err != nil {
			t.Fatalf("contact reply %q: %v", rec.Body, err)
		}
		if c.Name == "" || len(c.Name) > 200 || len(c.Email) > 200 || c.ID < 1 {
			t.Fatalf("stored contact out of bounds: %+v", c)
		}
	})
}
