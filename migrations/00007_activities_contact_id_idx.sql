-- +goose NO TRANSACTION
-- +goose Up
-- Foreign key activities.contact_id: deleting a contact must not scan activities.
SET lock_timeout = '5s';
CREATE INDEX CONCURRENTLY IF NOT EXISTS activities_contact_id_idx ON activities (contact_id);
RESET lock_timeout;

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS activities_contact_id_idx;
