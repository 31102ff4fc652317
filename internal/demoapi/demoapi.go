// Package demoapi is a small multi-tenant contacts API that `sluice dev` and the
// compose stack put behind Sluice, so rate limits, caching and invalidation have
// real traffic to work on. It trusts the x-sluice-tenant header, which Sluice
// sets after stripping any client copy.
package demoapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Contact is one address-book entry of a tenant.
type Contact struct {
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	Email     string    `json:"email"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Stats summarises a tenant's data for the dashboard.
type Stats struct {
	Tenant      string    `json:"tenant"`
	Contacts    int       `json:"contacts"`
	LastChanged time.Time `json:"last_changed"`
}

// Store keeps contacts per tenant. Implementations are safe for concurrent use.
type Store interface {
	List(ctx context.Context, tenant string, limit int) ([]Contact, error)
	Get(ctx context.Context, tenant string, id int64) (Contact, error)
	Create(ctx context.Context, tenant string, c Contact) (Contact, error)
	Update(ctx context.Context, tenant string, c Contact) (Contact, error)
	Delete(ctx context.Context, tenant string, id int64) error
	Stats(ctx context.Context, tenant string) (Stats, error)
}

// ErrNotFound is returned by a Store for a missing contact.
var ErrNotFound = errors.New("demoapi: not found")

// Memory is an in-process Store. The zero value is not usable; use NewMemory.
type Memory struct {
	now     func() time.Time
	mu      sync.Mutex // guards tenants and nextID
	tenants map[string]map[int64]Contact
	changed map[string]time.Time
	nextID  int64
}

// NewMemory returns an empty in-memory store.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now, tenants: map[string]map[int64]Contact{}, changed: map[string]time.Time{}}
}

// Seed adds a few contacts to each tenant, for demos.
func (m *Memory) Seed(tenants ...string) {
	names := []string{"Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov"}
	for _, t := range tenants {
		for _, n := range names {
			email := strings.ToLower(strings.ReplaceAll(n, " ", ".")) + "@" + t + ".example"
			_, _ = m.Create(context.Background(), t, Contact{Name: n, Email: email})
		}
	}
}

// List returns up to limit contacts of tenant in id order.
func (m *Memory) List(_ context.Context, tenant string, limit int) ([]Contact, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Contact, 0, len(m.tenants[tenant]))
	for _, c := range m.tenants[tenant] {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// Get returns one contact or ErrNotFound.
func (m *Memory) Get(_ context.Context, tenant string, id int64) (Contact, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.tenants[tenant][id]
	if !ok {
		return Contact{}, ErrNotFound
	}
	return c, nil
}

// Create stores a new contact and returns it with its id.
func (m *Memory) Create(_ context.Context, tenant string, c Contact) (Contact, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextID++
	now := m.now().UTC().Truncate(time.Second)
	c.ID, c.CreatedAt, c.UpdatedAt = m.nextID, now, now
	if m.tenants[tenant] == nil {
		m.tenants[tenant] = map[int64]Contact{}
	}
	m.tenants[tenant][c.ID] = c
	m.changed[tenant] = now
	return c, nil
}

// Update replaces name and email of an existing contact.
func (m *Memory) Update(_ context.Context, tenant string, c Contact) (Contact, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.tenants[tenant][c.ID]
	if !ok {
		return Contact{}, ErrNotFound
	}
	now := m.now().UTC().Truncate(time.Second)
	old.Name, old.Email, old.UpdatedAt = c.Name, c.Email, now
	m.tenants[tenant][c.ID] = old
	m.changed[tenant] = now
	return old, nil
}

// Delete removes a contact.
func (m *Memory) Delete(_ context.Context, tenant string, id int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.tenants[tenant][id]; !ok {
		return ErrNotFound
	}
	delete(m.tenants[tenant], id)
	m.changed[tenant] = m.now().UTC().Truncate(time.Second)
	return nil
}

// Stats counts a tenant's contacts.
func (m *Memory) Stats(_ context.Context, tenant string) (Stats, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Tenant: tenant, Contacts: len(m.tenants[tenant]), LastChanged: m.changed[tenant]}, nil
}

// API serves the demo endpoints:
//
//	GET    /api/v1/contacts            list (Cache-Control: max-age=30)
//	POST   /api/v1/contacts            create (201 + Location)
//	GET    /api/v1/contacts/{id}       one contact (max-age=60, ETag, Last-Modified)
//	PUT    /api/v1/contacts/{id}       replace
//	DELETE /api/v1/contacts/{id}       delete
//	GET    /api/v1/dashboard/stats     per-tenant counts (max-age=10)
//	GET    /healthz
//
// Responses name their cache tags in Surrogate-Key (contacts:{tenant},
// contact:{tenant}:{id}) for tag-based invalidation.
type API struct {
	store Store
	mux   *http.ServeMux
}

// New returns the API over store.
func New(store Store) *API {
	a := &API{store: store, mux: http.NewServeMux()}
	a.mux.HandleFunc("GET /api/v1/contacts", a.list)
	a.mux.HandleFunc("POST /api/v1/contacts", a.create)
	a.mux.HandleFunc("GET /api/v1/contacts/{id}", a.get)
	a.mux.HandleFunc("PUT /api/v1/contacts/{id}", a.update)
	a.mux.HandleFunc("PATCH /api/v1/contacts/{id}", a.update)
	a.mux.HandleFunc("DELETE /api/v1/contacts/{id}", a.delete)
	a.mux.HandleFunc("GET /api/v1/dashboard/stats", a.stats)
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	return a
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// tenant is the caller as Sluice identified it; "anonymous" without identity.
func tenant(r *http.Request) string {
	if t := r.Header.Get("x-sluice-tenant"); t != "" {
		return t
	}
	return "anonymous"
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, v any, cacheControl string, keys ...string) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if cacheControl != "" {
		h.Set("Cache-Control", cacheControl)
	}
	if len(keys) > 0 {
		h.Set("Surrogate-Key", strings.Join(keys, " "))
	}
	if status == http.StatusOK && r.Method == http.MethodGet {
		sum := sha256.Sum256(body)
		etag := `"` + hex.EncodeToString(sum[:8]) + `"`
		h.Set("ETag", etag)
		if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, etag) {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// etagMatch implements If-None-Match's weak comparison (RFC 9110 §13.1.2).
func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == strings.TrimPrefix(etag, "W/") {
			return true
		}
	}
	return false
}

func problem(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func tagList(t string) string          { return "contacts:" + t }
func tagOne(t string, id int64) string { return fmt.Sprintf("contact:%s:%d", t, id) }

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			problem(w, http.StatusBadRequest, "limit must be 1..1000")
			return
		}
		limit = n
	}
	t := tenant(r)
	cs, err := a.store.List(r.Context(), t, limit)
	if err != nil {
		problem(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, r, http.StatusOK, map[string]any{"tenant": t, "contacts": cs}, "max-age=30", tagList(t))
}

// maxBody bounds request bodies of the demo API.
const maxBody = 64 << 10

func decodeContact(w http.ResponseWriter, r *http.Request) (Contact, bool) {
	var c Contact
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		problem(w, http.StatusBadRequest, "invalid contact JSON: "+err.Error())
		return c, false
	}
	c.Name, c.Email = strings.TrimSpace(c.Name), strings.TrimSpace(c.Email)
	if c.Name == "" || len(c.Name) > 200 || len(c.Email) > 200 {
		problem(w, http.StatusUnprocessableEntity, "name is required; name and email at most 200 bytes")
		return c, false
	}
	return c, true
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	c, ok := decodeContact(w, r)
	if !ok {
		return
	}
	t := tenant(r)
	c, err := a.store.Create(r.Context(), t, c)
	if err != nil {
		problem(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Location", fmt.Sprintf("/api/v1/contacts/%d", c.ID))
	writeJSON(w, r, http.StatusCreated, c, "no-store")
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id < 1 {
		problem(w, http.StatusBadRequest, "id must be a positive integer")
		return 0, false
	}
	return id, true
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	t := tenant(r)
	c, err := a.store.Get(r.Context(), t, id)
	if errors.Is(err, ErrNotFound) {
		problem(w, http.StatusNotFound, "no such contact")
		return
	}
	if err != nil {
		problem(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Last-Modified", c.UpdatedAt.Format(http.TimeFormat))
	writeJSON(w, r, http.StatusOK, c, "max-age=60", tagList(t), tagOne(t, id))
}

func (a *API) update(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	c, ok := decodeContact(w, r)
	if !ok {
		return
	}
	c.ID = id
	c, err := a.store.Update(r.Context(), tenant(r), c)
	if errors.Is(err, ErrNotFound) {
		problem(w, http.StatusNotFound, "no such contact")
		return
	}
	if err != nil {
		problem(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, r, http.StatusOK, c, "no-store")
}

func (a *API) delete(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	err := a.store.Delete(r.Context(), tenant(r), id)
	if errors.Is(err, ErrNotFound) {
		problem(w, http.StatusNotFound, "no such contact")
		return
	}
	if err != nil {
		problem(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) stats(w http.ResponseWriter, r *http.Request) {
	t := tenant(r)
	s, err := a.store.Stats(r.Context(), t)
	if err != nil {
		problem(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, r, http.StatusOK, s, "max-age=10", tagList(t))
}
