package demoapi

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/db"
	"github.com/sluicehq/sluice/internal/db/dbtest"
)

// storeContract runs the behaviour every Store promises; Memory and Postgres
// both pass it.
func storeContract(t *testing.T, s Store) {
	ctx := context.Background()
	a1, err := s.Create(ctx, "acme", Contact{Name: "Ada Lovelace", Email: "ada@acme.example"})
	if err != nil || a1.ID == 0 || a1.CreatedAt.IsZero() {
		t.Fatalf("Create = %+v, %v", a1, err)
	}
	a2, _ := s.Create(ctx, "acme", Contact{Name: "Grace Hopper", Email: "grace@acme.example"})
	g1, _ := s.Create(ctx, "globex", Contact{Name: "Hank Scorpio", Email: "hank@globex.example"})

	tests := []struct {
		name  string
		check func(t *testing.T)
	}{
		{name: "list in id order, own tenant only", check: func(t *testing.T) {
			got, err := s.List(ctx, "acme", 0)
			if err != nil || len(got) != 2 || got[0].ID != a1.ID || got[1].ID != a2.ID {
				t.Fatalf("List = %+v, %v", got, err)
			}
		}},
		{name: "list limit", check: func(t *testing.T) {
			got, _ := s.List(ctx, "acme", 1)
			if len(got) != 1 {
				t.Fatalf("List(limit 1) = %d contacts", len(got))
			}
		}},
		{name: "unknown tenant lists nothing", check: func(t *testing.T) {
			got, err := s.List(ctx, "initech", 10)
			if err != nil || got == nil || len(got) != 0 {
				t.Fatalf("List = %#v, %v; want empty non-nil", got, err)
			}
		}},
		{name: "get", check: func(t *testing.T) {
			got, err := s.Get(ctx, "acme", a1.ID)
			if err != nil || got != a1 {
				t.Fatalf("Get = %+v, %v; want %+v", got, err, a1)
			}
		}},
		{name: "other tenant's contact is not found", check: func(t *testing.T) {
			if _, err := s.Get(ctx, "acme", g1.ID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get = %v", err)
			}
		}},
		{name: "update", check: func(t *testing.T) {
			got, err := s.Update(ctx, "acme", Contact{ID: a2.ID, Name: "Grace M. Hopper", Email: "gmh@acme.example"})
			if err != nil || got.Name != "Grace M. Hopper" || got.CreatedAt != a2.CreatedAt {
				t.Fatalf("Update = %+v, %v", got, err)
			}
			if _, err := s.Update(ctx, "globex", Contact{ID: a2.ID, Name: "x"}); !errors.Is(err, ErrNotFound) {
				t.Fatalf("cross-tenant Update = %v", err)
			}
		}},
		{name: "delete", check: func(t *testing.T) {
			if err := s.Delete(ctx, "globex", a1.ID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("cross-tenant Delete = %v", err)
			}
			if err := s.Delete(ctx, "acme", a1.ID); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, "acme", a1.ID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second Delete = %v", err)
			}
		}},
		{name: "stats", check: func(t *testing.T) {
			st, err := s.Stats(ctx, "acme")
			if err != nil || st.Contacts != 1 || st.Tenant != "acme" || st.LastChanged.IsZero() {
				t.Fatalf("Stats = %+v, %v", st, err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.check)
	}
}

func TestMemoryContract(t *testing.T) { storeContract(t, NewMemory(nil)) }

func newPostgres(t *testing.T) (*Postgres, *db.DB) {
	t.Helper()
	ctx := context.Background()
	d, err := db.Open(ctx, db.Config{URL: dbtest.New(t)}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	if _, err := db.Migrate(ctx, d.Primary(), db.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	return NewPostgres(d, "free"), d
}

func TestPostgresContract(t *testing.T) {
	s, d := newPostgres(t)
	storeContract(t, s)
	var tier string
	if err := d.Primary().QueryRow(context.Background(), `SELECT tier FROM tenants WHERE id = 'globex'`).Scan(&tier); err != nil || tier != "free" {
		t.Fatalf("tenant created with tier %q, %v", tier, err)
	}
}

func TestPostgresThroughAPI(t *testing.T) {
	s, _ := newPostgres(t)
	api := New(s)
	do := func(method, path, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("x-sluice-tenant", "acme")
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		return rec
	}
	rec := do("POST", "/api/v1/contacts", `{"name":"New Person","email":"n@p"}`)
	if rec.Code != 201 {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	loc := rec.Header().Get("Location")
	rec = do("GET", loc, "")
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "New Person") || rec.Header().Get("Last-Modified") == "" {
		t.Fatalf("get %s: %d %s %v", loc, rec.Code, rec.Body, rec.Header())
	}
	if rec := do("GET", "/api/v1/dashboard/stats", ""); !strings.Contains(rec.Body.String(), `"contacts":1`) {
		t.Fatalf("stats: %s", rec.Body)
	}
}
