package demoapi

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Pools is what Postgres needs of internal/db.DB: the primary for writes and
// a reader that may be a lagging replica.
type Pools interface {
	Primary() *pgxpool.Pool
	Reader(ctx context.Context) *pgxpool.Pool
}

// Postgres is a Store over the schema in migrations/. Reads go to
// Pools.Reader, so with a replica a contact may be missing for up to the
// replica's lag after it was written. It is safe for concurrent use.
type Postgres struct {
	pools Pools
	// NewTenantTier is the tier given to a tenant the demo meets for the
	// first time (tenants rows are created on a tenant's first contact).
	newTenantTier string
}

var _ Store = (*Postgres)(nil)

// NewPostgres returns a Store over pools; unknown tenants are created with
// tier newTenantTier (e.g. "free") on their first write.
func NewPostgres(pools Pools, newTenantTier string) *Postgres {
	return &Postgres{pools: pools, newTenantTier: newTenantTier}
}

const contactCols = `id, name, email, created_at, updated_at`

func scanContact(r pgx.Row) (Contact, error) {
	var c Contact
	err := r.Scan(&c.ID, &c.Name, &c.Email, &c.CreatedAt, &c.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Contact{}, ErrNotFound
	}
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return c, err
}

// List returns up to limit contacts of tenant in id order (limit ≤ 0: all).
func (p *Postgres) List(ctx context.Context, tenant string, limit int) ([]Contact, error) {
	var lim any // NULL: no limit
	if limit > 0 {
		lim = limit
	}
	rows, err := p.pools.Reader(ctx).Query(ctx,
		`SELECT `+contactCols+` FROM contacts WHERE tenant_id = $1 ORDER BY id LIMIT $2`, tenant, lim)
	if err != nil {
		return nil, fmt.Errorf("demoapi: list: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Contact, error) { return scanContact(r) })
	if err != nil {
		return nil, fmt.Errorf("demoapi: list: %w", err)
	}
	if out == nil {
		out = []Contact{}
	}
	return out, nil
}

// Get returns one contact or ErrNotFound.
func (p *Postgres) Get(ctx context.Context, tenant string, id int64) (Contact, error) {
	c, err := scanContact(p.pools.Reader(ctx).QueryRow(ctx,
		`SELECT `+contactCols+` FROM contacts WHERE tenant_id = $1 AND id = $2`, tenant, id))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return c, fmt.Errorf("demoapi: get: %w", err)
	}
	return c, err
}

// Create stores a new contact (creating the tenant if needed) and returns it
// with its id. Times are whole seconds, as HTTP dates are.
func (p *Postgres) Create(ctx context.Context, tenant string, c Contact) (Contact, error) {
	var out Contact
	err := pgx.BeginFunc(ctx, p.pools.Primary(), func(tx pgx.Tx) error {
		// ON CONFLICT DO NOTHING neither locks nor rewrites an existing tenant,
		// and the tier trigger fires only for a row actually inserted.
		if _, err := tx.Exec(ctx, `INSERT INTO tenants (id, tier) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`,
			tenant, p.newTenantTier); err != nil {
			return err
		}
		var err error
		out, err = scanContact(tx.QueryRow(ctx, `
INSERT INTO contacts (tenant_id, name, email, created_at, updated_at)
VALUES ($1, $2, $3, date_trunc('second', now()), date_trunc('second', now()))
RETURNING `+contactCols, tenant, c.Name, c.Email))
		return err
	})
	if err != nil {
		return Contact{}, fmt.Errorf("demoapi: create: %w", err)
	}
	return out, nil
}

// Update replaces name and email of an existing contact.
func (p *Postgres) Update(ctx context.Context, tenant string, c Contact) (Contact, error) {
	out, err := scanContact(p.pools.Primary().QueryRow(ctx, `
UPDATE contacts SET name = $3, email = $4, updated_at = date_trunc('second', now())
WHERE tenant_id = $1 AND id = $2
RETURNING `+contactCols, tenant, c.ID, c.Name, c.Email))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return out, fmt.Errorf("demoapi: update: %w", err)
	}
	return out, err
}

// Delete removes a contact.
func (p *Postgres) Delete(ctx context.Context, tenant string, id int64) error {
	tag, err := p.pools.Primary().Exec(ctx, `DELETE FROM contacts WHERE tenant_id = $1 AND id = $2`, tenant, id)
	if err != nil {
		return fmt.Errorf("demoapi: delete: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// Stats counts a tenant's contacts. LastChanged is the newest creation or
// update; unlike Memory it does not move on a delete (no row is left to say
// when).
func (p *Postgres) Stats(ctx context.Context, tenant string) (Stats, error) {
	s := Stats{Tenant: tenant}
	var last *time.Time
	err := p.pools.Reader(ctx).QueryRow(ctx,
		`SELECT count(*), max(greatest(created_at, updated_at)) FROM contacts WHERE tenant_id = $1`, tenant).
		Scan(&s.Contacts, &last)
	if err != nil {
		return Stats{}, fmt.Errorf("demoapi: stats: %w", err)
	}
	if last != nil {
		s.LastChanged = last.UTC()
	}
	return s, nil
}
