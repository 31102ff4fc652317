-- +goose NO TRANSACTION
-- +goose Up
-- Newest activities of a tenant; also the index of the activities.tenant_id foreign key.
SET lock_timeout = '5s';
CREATE INDEX CONCURRENTLY IF NOT EXISTS activities_tenant_created_idx ON activities (tenant_id, created_at DESC);
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS activities_tenant_created_idx;
