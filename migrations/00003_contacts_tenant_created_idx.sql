-- +goose NO TRANSACTION
-- +goose Up
-- Newest contacts of a tenant; also the index of the contacts.tenant_id foreign key.
SET lock_timeout = '5s';
CREATE INDEX CONCURRENTLY IF NOT EXISTS contacts_tenant_created_idx ON contacts (tenant_id, created_at DESC);
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS contacts_tenant_created_idx;
