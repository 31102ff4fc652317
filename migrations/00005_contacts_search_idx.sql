-- +goose NO TRANSACTION
-- +goose Up
-- Full-text search over contact name and email.
SET lock_timeout = '5s';
CREATE INDEX CONCURRENTLY IF NOT EXISTS contacts_search_idx ON contacts USING gin (search);
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS contacts_search_idx;
