// Package migrations holds Sluice's PostgreSQL schema as goose SQL files,
// embedded so the binary carries them. internal/db runs them.
//
// Files that build indexes use `-- +goose NO TRANSACTION`, because CREATE INDEX
// CONCURRENTLY cannot run inside a transaction block; each sets a lock_timeout
// so a build queued behind a long transaction gives up instead of stalling
// every writer queued behind it, and resets it before the connection returns
// to the pool.
package migrations

import "embed"

// FS holds the migration files, named NNNNN_description.sql (goose numbering).
//
//go:embed *.sql
var FS embed.FS
