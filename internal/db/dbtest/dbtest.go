// Package dbtest gives each test its own PostgreSQL database on the machine's
// server, dropped when the test ends. Tests never touch another's database.
package dbtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/internal/testenv"
)

// AdminURL is the server tests create their databases on: env
// SLUICE_TEST_DATABASE_URL, default the local postgres database (trust auth).
func AdminURL() string {
	if u := os.Getenv("SLUICE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// New creates an empty database with a random name and returns its URL. The
// database is dropped (WITH (FORCE), ending leftover sessions) in t.Cleanup.
// With -short the test is skipped (it fails under CI=true: testenv.SkipShort).
func New(t testing.TB) string {
	t.Helper()
	testenv.SkipShort(t, "needs PostgreSQL")
	b := make([]byte, 6)
	rand.Read(b)
	name := "sluice_test_" + hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatalf("dbtest: connect %s: %v", AdminURL(), err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("dbtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, AdminURL())
		if err != nil {
			t.Errorf("dbtest: drop %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("dbtest: drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(AdminURL())
	if err != nil {
		t.Fatalf("dbtest: parse %s: %v", AdminURL(), err)
	}
	u.Path = "/" + name
	return u.String()
}
