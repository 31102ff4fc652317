// Package chaos holds Sluice's fault tests under load (issue #8): each test
// runs the real path (the devstack gateway, or the App's gRPC services) with
// concurrent clients while a dependency fails — Redis killed or slowed,
// PostgreSQL cut or blackholed, the origin answering 5xx, ext_proc streams
// cancelled, the process shut down — and asserts what clients see: no
// request failed because of Sluice, added latency stayed bounded, and Sluice
// recovered on its own. Each test logs one "FIGURE: ..." line with the
// measured numbers (bench/chaos.sh prints them).
//
// The package has no code of its own: only this comment and tests. They need
// Redis (redis-server, and the server at 127.0.0.1:6379) and PostgreSQL
// (127.0.0.1:5432), and fail without them, like every integration test here;
// -short skips them.
package chaos
