-- +goose NO TRANSACTION
-- +goose Up
-- Covering index for the demo API's list (tenant, id order): index-only scans.
SET lock_timeout = '5s';
CREATE INDEX CONCURRENTLY IF NOT EXISTS contacts_tenant_id_covering_idx ON contacts (tenant_id, id) INCLUDE (name, email, created_at, updated_at);
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS contacts_tenant_id_covering_idx;
