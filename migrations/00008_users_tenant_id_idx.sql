-- +goose NO TRANSACTION
-- +goose Up
-- Foreign key users.tenant_id: deleting a tenant must not scan users.
SET lock_timeout = '5s';
CREATE INDEX CONCURRENTLY IF NOT EXISTS users_tenant_id_idx ON users (tenant_id);
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS users_tenant_id_idx;
